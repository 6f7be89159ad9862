//! Client connections on `GET /ws`: authentication before the upgrade, then one task per
//! connection in which a reader and a writer run side by side.
//!
//! The writer drains everything in the connection's [`SendQueue`](crate::registry::SendQueue),
//! writes it as one batch and flushes once, under the write timeout, and it alone decides how the
//! connection closes (the close codes of README.md, Endpoints). It shares the socket's sending half
//! with the tasks that publish single events ([`sink`]): a publisher that finds the writer idle
//! writes what is queued itself, and leaves the writer only what the socket did not take at once.
//! The reader answers `ping`/`heartbeat` through the same queue and enforces the idle timeout.
//!
//! A client that stops reading is let go at once: when its queue overflows, the writer abandons
//! the write it is stuck in, gives the 4001 close [`SLOW_CONSUMER_CLOSE_TIMEOUT`] to get out,
//! and drops the socket, so the connection's registry entry, gauge and memory are released
//! within about a second of the overflow, never after the write timeout.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::task::AbortOnDropHandle;

use crate::auth::{ClientIdentity, client_user_id, token_from_subprotocols};
use crate::labels::{AuthFailure, CloseReason, Outcome};
use crate::registry::{Connection, ConnectionSlot, Frame, RegisterError};
use crate::server::AppState;
use crate::server::api_error::ApiError;
use crate::server::listen::until_grace_over;
use crate::server::protocol::{ClientMessage, ConnectionData, ServerMessage};
use crate::server::woken::WhenWoken;

mod sink;

use sink::{SharedSink, Socket, count_delivered};

/// How long the writer waits for the client to answer its close frame.
const CLOSE_ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a slow consumer's close frame (4001) may take to leave before the socket is
/// dropped without it, so a stalled client is let go soon after its queue overflows (README.md,
/// Endpoints, `GET /ws`).
const SLOW_CONSUMER_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The close code and reason a connection ends with, for each reason the gateway closes it.
fn close_frame(reason: CloseReason) -> Option<CloseFrame> {
    let (code, text) = match reason {
        CloseReason::Shutdown => (1001, "server shutting down"),
        CloseReason::SlowConsumer => (4001, "slow consumer: send queue overflow"),
        CloseReason::WriteTimeout => (4001, "slow consumer: write timeout"),
        CloseReason::TokenExpired => (1008, "token expired"),
        CloseReason::FrameTooBig => (1009, "message too big"),
        CloseReason::IdleTimeout => (1000, "idle timeout"),
        CloseReason::TooManyConnections => (4002, "too many connections for this user"),
        CloseReason::ProtocolError => (1002, "protocol error"),
        CloseReason::InvalidUtf8 => (1007, "text frame is not valid UTF-8"),
        // The peer is gone or the socket failed: there is no one to tell.
        CloseReason::ClientClosed | CloseReason::WriteError => return None,
    };
    Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(text),
    })
}

/// `GET /ws`: authenticates, then upgrades. Failures are answered before any upgrade.
pub(crate) async fn handler(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if state.shutdown.is_cancelled() {
        return ApiError::ShuttingDown.into_response();
    }
    let (identity, subprotocol) = match authenticate(&state, &params, &headers) {
        Ok(found) => found,
        Err(failure) => {
            state.metrics.auth_failure(failure);
            tracing::debug!(reason = failure.as_str(), "refused client connection");
            return ApiError::from(failure).into_response();
        }
    };
    let Some(slot) = state.registry.try_reserve() else {
        return ApiError::TooManyConnections.into_response();
    };
    let limits = &state.config.limits;
    let mut upgrade = upgrade
        .read_buffer_size(limits.ws_read_buffer_bytes)
        .write_buffer_size(limits.ws_write_buffer_bytes)
        .max_message_size(limits.max_client_message_bytes)
        .max_frame_size(limits.max_client_message_bytes);
    if let Some(protocol) = subprotocol {
        upgrade.set_selected_protocol(protocol);
    }
    let thread_id = params.get("thread_id").cloned();
    let tracker = state.tracker.clone();
    let (shutdown, grace) = (state.shutdown.clone(), state.config.server.shutdown_grace);
    upgrade
        .on_failed_upgrade(|error| tracing::debug!(%error, "websocket upgrade failed"))
        .on_upgrade(move |socket| {
            // Closing with 1001 is bounded by the write timeout and the close handshake; the
            // grace period bounds it whatever the client does.
            // The connection's future is made inside the task and pinned there, so the task
            // (one per idle connection) holds it once; see `until_grace_over`.
            tracker.track_future(async move {
                let connection = serve_connection(state, socket, identity, thread_id, slot);
                tokio::pin!(connection);
                until_grace_over(connection, &shutdown, grace).await;
            })
        })
}

/// Finds and checks the client's credentials: `Authorization: Bearer`, `?token=`, the
/// `jwt.<base64url>` subprotocol (returned to be echoed), or in dev mode `?user_id=`.
fn authenticate(
    state: &AppState,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<(ClientIdentity, Option<HeaderValue>), AuthFailure> {
    let from_header = match headers.get(AUTHORIZATION) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(crate::auth::bearer)
                .ok_or(AuthFailure::Malformed)?
                .to_owned(),
        ),
    };
    let mut subprotocol = None;
    let token = from_header
        .or_else(|| params.get("token").cloned())
        .or_else(|| {
            let header = headers.get(SEC_WEBSOCKET_PROTOCOL)?.to_str().ok()?;
            let (token, protocol) = token_from_subprotocols(header)?;
            subprotocol = HeaderValue::from_str(protocol).ok();
            Some(token)
        });
    match token {
        Some(token) => Ok((state.auth.verify_client(&token)?, subprotocol)),
        None => match params.get("user_id") {
            Some(user_id) if state.auth.allows_anonymous() && !user_id.is_empty() => Ok((
                ClientIdentity {
                    user_id: client_user_id(user_id)?.to_owned(),
                    expires_at: None,
                },
                None,
            )),
            _ => Err(AuthFailure::MissingToken),
        },
    }
}

/// Runs one upgraded connection to its end.
async fn serve_connection(
    state: Arc<AppState>,
    socket: WebSocket,
    identity: ClientIdentity,
    thread_id: Option<String>,
    _slot: ConnectionSlot,
) {
    let user_id = identity.user_id.clone();
    let greeting = move |connection: &Connection| {
        ServerMessage::ConnectionEstablished {
            data: ConnectionData {
                connection_id: &connection.wire_id(),
                user_id: &user_id,
            },
        }
        .encode()
    };
    let registered = state
        .backplane
        .register(&state.registry, &identity.user_id, greeting)
        .await;
    let connection = match registered {
        Ok(connection) => connection,
        Err(RegisterError::TooManyForUser { limit }) => {
            return refuse_over_limit(&state, socket, &identity, limit).await;
        }
    };
    tracing::debug!(
        connection_id = %connection.wire_id(),
        user_id = identity.user_id.as_str(),
        thread_id = thread_id.as_deref().unwrap_or(""),
        "client connected"
    );

    let (sink, stream) = socket.split();
    let expires_in = identity.remaining();
    // The reader is a task of its own: were it a branch of this task's `select!`, it would be
    // polled (a read attempt into a zeroed buffer) every time the writer wakes for a frame.
    // However it ends, it closes the queue, which ends the writer; it is aborted when this task
    // ends or is cut at the end of the grace period.
    let mut reader = AbortOnDropHandle::new(tokio::spawn(read_loop(
        Arc::clone(&state),
        Arc::clone(&connection),
        stream,
    )));
    let sink = Arc::new(SharedSink::new(sink, Arc::clone(&state.metrics)));
    connection.set_write_through(Arc::clone(&sink) as _);
    let reason = write_loop(&state, &connection, &sink, expires_in).await;
    // The writer sent its close frame (or the reader is already done); give the client a moment
    // to answer it. A slow consumer gets no such moment: it is not reading, and its socket and
    // memory are to be released now.
    if !is_slow_consumer(reason)
        && let Ok(Err(error)) = timeout(CLOSE_ACK_TIMEOUT, &mut reader).await
        && error.is_panic()
    {
        // Closed as by the client (`CloseOnDrop`); the panic itself is a bug worth seeing.
        tracing::error!(%error, connection_id = %connection.wire_id(), "a connection's reader panicked");
    }
    drop(reader);

    state.backplane.unregister(&state.registry, &connection);
    // Anything pushed between the writer's last look and unregistering was never written.
    let mut left = Vec::new();
    connection.queue.take(&mut left);
    count_dropped(&state, &connection, &left, Outcome::DroppedClosed);
    state.metrics.connection_closed(reason);
    tracing::debug!(
        connection_id = %connection.wire_id(),
        reason = reason.as_str(),
        "client disconnected"
    );
}

/// Closes a connection the registry refused: its user is at the per-user limit.
async fn refuse_over_limit(
    state: &AppState,
    mut socket: WebSocket,
    identity: &ClientIdentity,
    limit: usize,
) {
    tracing::info!(
        user_id = identity.user_id.as_str(),
        limit,
        "refused connection over the per-user limit"
    );
    let close = close_frame(CloseReason::TooManyConnections);
    let _ = timeout(
        state.config.limits.write_timeout,
        socket.send(Message::Close(close)),
    )
    .await;
    state
        .metrics
        .connection_closed(CloseReason::TooManyConnections);
}

/// Drains the send queue to the socket until the connection closes; returns why it closed.
async fn write_loop(
    state: &AppState,
    connection: &Connection,
    sink: &SharedSink,
    expires_in: Option<Duration>,
) -> CloseReason {
    let limits = &state.config.limits;
    let mut ping = tokio::time::interval_at(
        Instant::now() + limits.heartbeat_interval,
        limits.heartbeat_interval,
    );
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Far enough away to never fire when the token has no expiry (dev mode).
    let expiry = sleep_until(
        Instant::now() + expires_in.unwrap_or(Duration::from_secs(100 * 365 * 24 * 3600)),
    );
    tokio::pin!(expiry);
    let shutdown = state.shutdown.cancelled();
    tokio::pin!(shutdown);
    // The heartbeat, the token's expiry and shutdown, polled together and only when one of them
    // woke the task, not on every wake-up for a frame.
    let mut beside = WhenWoken::new(poll_fn(|cx| {
        if shutdown.as_mut().poll(cx).is_ready() {
            Poll::Ready(Beside::Shutdown)
        } else if expiry.as_mut().poll(cx).is_ready() {
            Poll::Ready(Beside::Expired)
        } else if ping.poll_tick(cx).is_ready() {
            Poll::Ready(Beside::Ping)
        } else {
            Poll::Pending
        }
    }));
    loop {
        let mut socket = sink.lock().await;
        if socket.is_writing() {
            finish_under_way(state, connection, &mut socket).await;
            continue;
        }
        let closing = connection.queue.take(&mut socket.batch);
        if let Some(reason) = closing
            && let Some(outcome) = lost_when_closing(reason)
        {
            count_dropped(state, connection, &socket.batch, outcome);
            socket.clear();
            // Of these, only a slow consumer has a close frame; the rest have no one to tell.
            send_close(&mut socket, reason, SLOW_CONSUMER_CLOSE_TIMEOUT).await;
            return reason;
        }
        if socket.is_writing() {
            if let Err(reason) = write_batch(state, connection, &mut socket).await {
                connection.queue.close(reason);
                continue;
            }
            // Look again before sleeping: more may have arrived during the write.
            if closing.is_none() {
                continue;
            }
        }
        if let Some(reason) = closing {
            // Everything queued before the close was written; now say goodbye.
            send_close(&mut socket, reason, limits.write_timeout).await;
            return reason;
        }
        // Idle: publishers may write through the socket until the writer wakes.
        drop(socket);
        let event = tokio::select! {
            () = connection.queue.changed() => continue,
            event = &mut beside => event,
        };
        match event {
            Beside::Ping => ping_client(connection, sink, limits.write_timeout).await,
            Beside::Expired => {
                connection.queue.close(CloseReason::TokenExpired);
            }
            Beside::Shutdown => {
                connection.queue.close(CloseReason::Shutdown);
            }
        }
    }
}

/// Finishes the write a publisher started and the socket did not take at once, unless the
/// connection is already closing for a reason that leaves nothing to write to: then its frames
/// are counted lost, as if taken from the queue at that moment.
async fn finish_under_way(state: &AppState, connection: &Connection, socket: &mut Socket) {
    if let Some(outcome) = connection.queue.closing().and_then(lost_when_closing) {
        count_dropped(state, connection, &socket.batch, outcome);
        socket.clear();
    } else if let Err(reason) = write_batch(state, connection, socket).await {
        connection.queue.close(reason);
    }
}

/// How the frames still to be written count when the connection closes for `reason`: lost to a
/// slow consumer, lost to a closed socket, or `None` when they are still written before the
/// close frame (shutdown, an expired token, the idle timeout, a protocol error).
fn lost_when_closing(reason: CloseReason) -> Option<Outcome> {
    match reason {
        reason if is_slow_consumer(reason) => Some(Outcome::DroppedSlowConsumer),
        CloseReason::ClientClosed | CloseReason::WriteError => Some(Outcome::DroppedClosed),
        _ => None,
    }
}

/// Sends the heartbeat's ping under the write timeout, closing the connection if it fails.
async fn ping_client(connection: &Connection, sink: &SharedSink, write_timeout: Duration) {
    let mut socket = sink.lock().await;
    // A ping behind a write under way would wait on it for a write timeout of its own; the
    // loop finishes that write first, and the next tick pings.
    if socket.is_writing() {
        return;
    }
    let ping = timeout(
        write_timeout,
        socket.sink.send(Message::Ping(Default::default())),
    );
    // An overflow while the ping is stuck is seen by the next `take`.
    let sent = tokio::select! {
        biased;
        sent = ping => Some(sent),
        () = connection.queue.overflowed() => None,
    };
    match sent {
        Some(Ok(Ok(()))) | None => {}
        Some(Ok(Err(_))) => {
            connection.queue.close(CloseReason::WriteError);
        }
        Some(Err(_)) => {
            connection.queue.close(CloseReason::WriteTimeout);
        }
    }
}

/// What the writer waits for besides frames.
enum Beside {
    Ping,
    Expired,
    Shutdown,
}

/// Writes every frame of the write under way (`socket.batch`) and flushes once, under the write
/// timeout, giving up at once if the queue overflows meanwhile; the write is over when this
/// returns. One flush per batch, not per frame: frames queued while the writer was busy leave
/// in one `write` (one syscall, one wake-up of the client). Flushing each frame measured no
/// cheaper per core in any shape (BENCHMARKS.md, "Issue 16: tuning trials"). Delivered frames
/// are counted with their latency; on failure the whole batch is counted as lost to the client
/// (a socket that fails under a write was closed or reset by the peer; one that does not drain
/// is a slow consumer).
async fn write_batch(
    state: &AppState,
    connection: &Connection,
    socket: &mut Socket,
) -> Result<(), CloseReason> {
    let written = {
        let write = poll_fn(|cx| socket.poll_write(cx));
        tokio::pin!(write);
        // Most writes complete at once, into the socket's buffer: only one that has to wait
        // gets a timer and a watch on the queue.
        match poll_once(write.as_mut()).await {
            Poll::Ready(done) => Some(Ok(done)),
            Poll::Pending => tokio::select! {
                biased;
                written = timeout(state.config.limits.write_timeout, write) => Some(written),
                () = connection.queue.overflowed() => None,
            },
        }
    };
    let result = match written {
        None => Err(CloseReason::SlowConsumer),
        Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(error))) => {
            tracing::debug!(%error, "websocket write failed");
            Err(CloseReason::WriteError)
        }
        Some(Err(_elapsed)) => Err(CloseReason::WriteTimeout),
    };
    match result {
        Ok(()) => count_delivered(&state.metrics, &socket.batch),
        Err(reason) => {
            if let Some(outcome) = lost_when_closing(reason) {
                count_dropped(state, connection, &socket.batch, outcome);
            }
        }
    }
    socket.clear();
    result
}

async fn send_close(socket: &mut Socket, reason: CloseReason, write_timeout: Duration) {
    if let Some(frame) = close_frame(reason) {
        let _ = timeout(write_timeout, socket.sink.send(Message::Close(Some(frame)))).await;
    }
}

fn count_dropped(state: &AppState, connection: &Connection, frames: &[Frame], outcome: Outcome) {
    sink::count_dropped(&state.metrics, connection, frames, outcome);
}

/// Polls `future` once, in the caller's context: `Pending` leaves it registered to wake the
/// caller, to be awaited further.
async fn poll_once<F: Future>(mut future: Pin<&mut F>) -> Poll<F::Output> {
    poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await
}

/// Whether a connection closes because its client does not read fast enough (close code 4001).
fn is_slow_consumer(reason: CloseReason) -> bool {
    matches!(
        reason,
        CloseReason::SlowConsumer | CloseReason::WriteTimeout
    )
}

/// Reads client frames until the client goes away, answering protocol messages through the
/// send queue and closing a client that stays silent past the idle timeout.
async fn read_loop(
    state: Arc<AppState>,
    connection: Arc<Connection>,
    mut stream: SplitStream<WebSocket>,
) {
    // However the reader ends (the client left, a read failed, it was aborted or panicked), the
    // connection closes: the first reason wins, so a reason set before stands.
    let _closing = CloseOnDrop(&connection);
    let idle_timeout = state.config.limits.idle_timeout;
    loop {
        let message = match timeout(idle_timeout, stream.next()).await {
            Err(_elapsed) => {
                connection.queue.close(CloseReason::IdleTimeout);
                // Keep reading so the close handshake can complete.
                continue;
            }
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                connection.queue.close(read_error_reason(error));
                break;
            }
            Ok(Some(Ok(message))) => message,
        };
        let reply = match message {
            Message::Text(text) => match ClientMessage::parse(&text) {
                ClientMessage::Ping => Some(
                    ServerMessage::Pong {
                        timestamp: unix_time(),
                    }
                    .encode(),
                ),
                ClientMessage::Heartbeat => Some(
                    ServerMessage::HeartbeatAck {
                        timestamp: unix_time(),
                    }
                    .encode(),
                ),
                ClientMessage::Invalid => Some(
                    ServerMessage::Error {
                        error_code: "JSON_PARSE_ERROR",
                        message: "message is not valid JSON",
                    }
                    .encode(),
                ),
                ClientMessage::Other => None,
            },
            Message::Binary(_) => Some(
                ServerMessage::Error {
                    error_code: "BINARY_NOT_SUPPORTED",
                    message: "send JSON text frames",
                }
                .encode(),
            ),
            // Pongs and pings only prove liveness; tungstenite answers pings itself.
            Message::Ping(_) | Message::Pong(_) => None,
            Message::Close(_) => break,
        };
        if let Some(reply) = reply {
            // A refused reply means the connection is already closing; nothing more to do.
            let _ = connection.queue.push(Frame::control(reply));
        }
    }
}

/// Closes a connection's queue as closed by the client when dropped.
struct CloseOnDrop<'a>(&'a Connection);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.queue.close(CloseReason::ClientClosed);
    }
}

fn read_error_reason(error: axum::Error) -> CloseReason {
    use tokio_tungstenite::tungstenite::Error as WsError;
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    match error.into_inner().downcast_ref::<WsError>() {
        Some(WsError::Capacity(_)) => CloseReason::FrameTooBig,
        // A client that drops its TCP connection without a close frame has simply gone.
        Some(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
            CloseReason::ClientClosed
        }
        // RFC 6455 §7.4.1: 1007 for data inconsistent with the message type.
        Some(WsError::Utf8(_)) => CloseReason::InvalidUtf8,
        Some(WsError::Protocol(_)) => CloseReason::ProtocolError,
        _ => CloseReason::ClientClosed,
    }
}

fn unix_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
