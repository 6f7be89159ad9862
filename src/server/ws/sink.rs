//! A connection's sending half, shared by its writer task and the tasks that publish to it.
//!
//! Whoever holds the lock writes. A publishing task only ever tries the lock
//! ([`WriteThrough::write_now`]): when the writer is idle, it takes what is queued and writes it
//! from where it is, without the writer's wake-up; when the socket does not take it all at once,
//! the write stays here, under way, and the writer finishes it under the write timeout. The writer
//! holds the lock for as long as it writes, and finishes a write under way before it takes
//! anything else from the queue, so frames leave in the queue's order whichever task writes them.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use axum::extract::ws::{Message, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{Sink, SinkExt};
use tokio::sync::{Mutex, MutexGuard};
use tokio::time::Instant;

use crate::labels::{CloseReason, Outcome};
use crate::metrics::Metrics;
use crate::registry::{Connection, Frame, WriteThrough};

/// A connection's sending half and the write under way on it.
pub(super) struct SharedSink {
    metrics: Arc<Metrics>,
    socket: Mutex<Socket>,
}

/// The sending half, locked.
pub(super) struct Socket {
    pub(super) sink: SplitSink<WebSocket, Message>,
    /// The frames of the write under way, taken from the queue; empty when none is.
    pub(super) batch: Vec<Frame>,
    /// How many of `batch` are in the sink already.
    fed: usize,
}

impl SharedSink {
    pub(super) fn new(sink: SplitSink<WebSocket, Message>, metrics: Arc<Metrics>) -> SharedSink {
        SharedSink {
            metrics,
            socket: Mutex::new(Socket {
                sink,
                batch: Vec::new(),
                fed: 0,
            }),
        }
    }

    /// Locks the sending half, waiting for a publisher's write to step out.
    pub(super) async fn lock(&self) -> MutexGuard<'_, Socket> {
        self.socket.lock().await
    }
}

impl Socket {
    /// Whether a write is under way: `batch` must be written and flushed before anything else.
    pub(super) fn is_writing(&self) -> bool {
        !self.batch.is_empty()
    }

    /// Drives the write under way: feeds what of `batch` is not in the sink yet, then flushes.
    /// Any task may drive it, a poll at a time, and another may finish it.
    pub(super) fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        while let Some(frame) = self.batch.get(self.fed) {
            ready!(self.sink.poll_ready_unpin(cx))?;
            Pin::new(&mut self.sink).start_send(Message::Text(frame.payload.clone()))?;
            self.fed += 1;
        }
        self.sink.poll_flush_unpin(cx)
    }

    /// Ends the write under way, whatever became of it.
    pub(super) fn clear(&mut self) {
        self.batch.clear();
        self.fed = 0;
    }
}

impl WriteThrough for SharedSink {
    /// Called under the user's shard lock, by the task that queued the frame: it never waits.
    fn write_now(&self, connection: &Connection) -> bool {
        let Ok(mut socket) = self.socket.try_lock() else {
            return false;
        };
        if socket.is_writing() || !connection.queue.take_open(&mut socket.batch) {
            return false;
        }
        if socket.batch.is_empty() {
            return true;
        }
        // Whatever remembers this no-op waker (the sink's lock, tungstenite's write wakers) gets
        // the writer's own the next time the writer polls; the caller wakes the writer whenever
        // this returns `false`, so an unfinished write is always picked up.
        match socket.poll_write(&mut Context::from_waker(Waker::noop())) {
            // Left under way: the caller wakes the writer, which finishes it.
            Poll::Pending => false,
            Poll::Ready(Ok(())) => {
                count_delivered(&self.metrics, &socket.batch);
                socket.clear();
                true
            }
            Poll::Ready(Err(error)) => {
                tracing::debug!(%error, "websocket write failed");
                count_dropped(
                    &self.metrics,
                    connection,
                    &socket.batch,
                    Outcome::DroppedClosed,
                );
                socket.clear();
                // Closing wakes the writer, which ends the connection.
                connection.queue.close(CloseReason::WriteError);
                true
            }
        }
    }
}

/// Counts every frame of `frames` delivered, with its latency: they were flushed just now.
pub(super) fn count_delivered(metrics: &Metrics, frames: &[Frame]) {
    let now = Instant::now();
    for frame in frames {
        if let Some(origin) = frame.origin {
            metrics.deliveries(origin, Outcome::Delivered, 1);
            metrics
                .delivery_latency(origin)
                .observe(now.duration_since(frame.accepted_at).as_secs_f64());
        }
    }
}

/// Counts every frame of `frames` lost to `connection`, with `outcome`.
pub(super) fn count_dropped(
    metrics: &Metrics,
    connection: &Connection,
    frames: &[Frame],
    outcome: Outcome,
) {
    for frame in frames {
        if let Some(origin) = frame.origin {
            connection.count_lost(origin, outcome, 1, metrics);
        }
    }
}
