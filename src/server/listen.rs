//! Serving HTTP on a bound socket: one accept loop per listener with a connection cap, hyper's
//! HTTP/1 server with a header-read timeout, a deadline on every request body, and a shutdown
//! that ends every connection within the grace period whatever the client does.
//!
//! A WebSocket leaves this module's care once hyper hands its socket over after the 101: the
//! HTTP timeouts and the HTTP connection cap do not apply to it (`limits.max_connections`, the
//! heartbeat and the idle timeout do), but the shutdown deadline does ([`until_grace_over`]).
//!
//! What hyper answers on its own: a request head it cannot parse (two `Content-Length`
//! headers, a bad method or URI) gets `400`, a head over [`MAX_HEADER_BYTES`] `431`, an overlong
//! URI `414`, each with an empty body and the connection closed. hyper 1 writes these itself
//! before any service sees the request and has no hook to give them a body.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::response::Response;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::IntCounter;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service as _;

use crate::config::Limits;
use crate::labels::{HttpTimeout, Listener};
use crate::metrics::Metrics;
use crate::server::woken::WhenWoken;

/// The largest request head (request line and headers) accepted; larger gets hyper's 431. A
/// client JWT in a header or subprotocol is a few KiB; this keeps what a capped number of
/// slow connections can make us buffer small.
pub(crate) const MAX_HEADER_BYTES: usize = 64 * 1024;

/// How long the accept loop pauses after an accept error (out of file descriptors, most
/// often), so that it does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// How one listener serves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpSettings {
    pub(crate) listener: Listener,
    /// Open HTTP connections at most; a connection accepted beyond it is closed at once.
    pub(crate) max_connections: usize,
    pub(crate) header_read_timeout: Duration,
    pub(crate) body_timeout: Duration,
    /// How long after shutdown begins a connection may still run.
    pub(crate) grace: Duration,
}

impl HttpSettings {
    /// The settings of `listener` from the configured limits.
    pub(crate) fn new(listener: Listener, limits: &Limits, grace: Duration) -> HttpSettings {
        HttpSettings {
            listener,
            max_connections: match listener {
                Listener::Public => limits.max_http_connections,
                Listener::Admin => limits.max_admin_http_connections,
            },
            header_read_timeout: limits.http_header_read_timeout,
            body_timeout: limits.http_body_timeout,
            grace,
        }
    }
}

/// What a listener's connections need besides their socket.
#[derive(Clone)]
pub(crate) struct Serving {
    pub(crate) router: Router,
    pub(crate) settings: HttpSettings,
    pub(crate) metrics: Arc<Metrics>,
    /// Cancelled to stop accepting and to close connections once their current request is done.
    pub(crate) stop: CancellationToken,
    /// The process's shutdown: [`HttpSettings::grace`] after it, every connection is dropped.
    pub(crate) shutdown: CancellationToken,
    /// Tracks each connection's task, so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
}

/// Accepts connections on `listener` until `serving.stop` is cancelled, each served in its own
/// tracked task. Returns once it stops accepting; connections go on until they finish, or until
/// the grace period after shutdown is over.
pub(crate) async fn serve(listener: TcpListener, serving: Serving) {
    let permits = Arc::new(Semaphore::new(serving.settings.max_connections));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(serving.settings.header_read_timeout)
        .max_header_size(MAX_HEADER_BYTES);
    let which = serving.settings.listener;
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    tracing::warn!(listener = which.as_str(), %error, "accepting a connection failed");
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                        () = serving.stop.cancelled() => break,
                    }
                }
            },
            () = serving.stop.cancelled() => break,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            // Closing at once costs nothing and keeps the descriptors for what is already open.
            serving.metrics.http_refused(which);
            drop(stream);
            continue;
        };
        serving
            .tracker
            .spawn(connection(stream, builder.clone(), serving.clone(), permit));
    }
    tracing::debug!(listener = which.as_str(), "stopped accepting");
}

/// Resolves `grace` after `shutdown` is cancelled: the moment anything still running is cut.
async fn grace_over(shutdown: &CancellationToken, grace: Duration) {
    shutdown.cancelled().await;
    tokio::time::sleep(grace).await;
}

/// Runs `work` unless the grace period after `shutdown` ends first, in which case `work` is
/// dropped by its owner (its sockets closed) and `None` returned.
///
/// `work` is pinned in the caller's frame and borrowed here rather than taken by value: an
/// `async fn` that takes a future by value holds it twice (its argument, then the copy
/// `select!` polls), and every wrapper around a connection's task is paid by every open
/// connection. Taken by value here and in the WebSocket task, this cost about 5 KiB per idle
/// WebSocket connection (BENCHMARKS.md, "Memory per idle connection").
pub(crate) async fn until_grace_over<F: Future>(
    work: Pin<&mut F>,
    shutdown: &CancellationToken,
    grace: Duration,
) -> Option<F::Output> {
    tokio::select! {
        output = work => Some(output),
        () = WhenWoken::new(grace_over(shutdown, grace)) => None,
    }
}

/// Serves one HTTP connection until it closes, is upgraded, or is cut at the end of the grace
/// period. Holds its permit (its place under the cap) until then.
async fn connection(
    stream: TcpStream,
    builder: http1::Builder,
    serving: Serving,
    _permit: OwnedSemaphorePermit,
) {
    let which = serving.settings.listener;
    let open = serving.metrics.http_connections(which);
    open.inc();
    let body_timeouts = serving
        .metrics
        .http_timeouts(which, HttpTimeout::Body)
        .clone();
    let body_timeout = serving.settings.body_timeout;
    let router = serving.router.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut router = router.clone();
        let request =
            request.map(|body| DeadlineBody::new(body, body_timeout, body_timeouts.clone()));
        async move {
            Ok::<Response, Infallible>(router.call(request).await.unwrap_or_else(|e| match e {}))
        }
    });
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    // Pinned here and borrowed by what polls it, so this task holds the connection once.
    tokio::pin!(conn);
    let graceful = async {
        tokio::select! {
            result = conn.as_mut() => result,
            () = WhenWoken::new(serving.stop.cancelled()) => {
                // Idle connections close now; a request in progress is answered first.
                conn.as_mut().graceful_shutdown();
                conn.as_mut().await
            }
        }
    };
    tokio::pin!(graceful);
    match until_grace_over(graceful, &serving.shutdown, serving.settings.grace).await {
        None => tracing::debug!(
            listener = which.as_str(),
            "shutdown grace period over; HTTP connection cut"
        ),
        Some(Err(error)) if error.is_timeout() => {
            serving
                .metrics
                .http_timeouts(which, HttpTimeout::Header)
                .inc();
        }
        Some(Err(error)) => {
            tracing::debug!(listener = which.as_str(), %error, "HTTP connection ended with an error");
        }
        Some(Ok(())) => {}
    }
    open.dec();
}

/// A request body that must arrive whole within a deadline counted from its head; past it the
/// next read fails with [`BodyTimedOut`], which the body reader answers with 408.
///
/// The timer is only armed when a read has to wait, so a body that is already in (the usual
/// producer call) costs no timer.
struct DeadlineBody<B> {
    inner: B,
    started: Instant,
    timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
    timeouts: IntCounter,
    timed_out: bool,
}

impl<B> DeadlineBody<B> {
    fn new(inner: B, timeout: Duration, timeouts: IntCounter) -> DeadlineBody<B> {
        DeadlineBody {
            inner,
            started: Instant::now(),
            timeout,
            deadline: None,
            timeouts,
            timed_out: false,
        }
    }
}

/// A request body did not arrive within `http_body_timeout_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyTimedOut {
    pub(crate) after: Duration,
}

impl fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request body did not arrive whole within {} ms",
            self.after.as_millis()
        )
    }
}

impl StdError for BodyTimedOut {}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.timed_out {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|result| result.map_err(Into::into)));
        }
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(this.started + this.timeout)));
        ready!(deadline.as_mut().poll(cx));
        this.timed_out = true;
        this.timeouts.inc();
        Poll::Ready(Some(Err(Box::new(BodyTimedOut {
            after: this.timeout,
        }))))
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `error` (or anything it wraps) is a request body that ran out of time.
pub(crate) fn body_timed_out(error: &(dyn StdError + 'static)) -> Option<BodyTimedOut> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(timed_out) = error.downcast_ref::<BodyTimedOut>() {
            return Some(*timed_out);
        }
        current = error.source();
    }
    None
}
