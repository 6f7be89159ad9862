//! The connection registry: every live connection by user, each connection's bounded send queue,
//! and the per-user offline queues of the SSOT path.
//!
//! Users are spread over shards, each a short-held std mutex, so unrelated users never wait on
//! each other. Everything that must be ordered for one user — registering a connection, replaying
//! its offline queue, enqueueing an event to every connection — happens under that user's shard
//! lock, which is what makes every connection of a user see the same order and an offline event
//! replay exactly once. No `.await` happens under a shard lock; a frame pushed through
//! [`Connection::push`] may be written to its socket there, without waiting.
//!
//! The registry does not write to sockets. A connection's writer task drains its [`SendQueue`];
//! a connection may also carry a [`WriteThrough`], through which the task that queued a frame
//! writes it at once when the socket is free ([`Connection::push`]).
//! Nor does it decide anything about events: paths compute what to enqueue through [`UserView`].

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::labels::{Cause, CloseReason, Outcome};
use crate::metrics::Metrics;
use crate::mutex::lock;
use crate::route::Origin;

const N_SHARDS: usize = 64;

/// One text frame waiting to be written to one connection.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    /// The encoded payload, shared by every recipient of the same event.
    pub(crate) payload: Utf8Bytes,
    /// The route and path that produced it; `None` for protocol replies such as `pong`.
    pub(crate) origin: Option<Origin>,
    /// When the event was accepted, for `delivery_latency_seconds`.
    pub(crate) accepted_at: Instant,
}

impl Frame {
    pub(crate) fn control(payload: Utf8Bytes) -> Frame {
        Frame {
            payload,
            origin: None,
            accepted_at: Instant::now(),
        }
    }
}

/// Why a frame was not accepted by a send queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// This frame overflowed the queue; the connection is now closing as a slow consumer.
    Overflow,
    /// The connection was already closing.
    Closed,
}

impl PushError {
    pub(crate) fn outcome(self) -> Outcome {
        match self {
            PushError::Overflow => Outcome::DroppedSlowConsumer,
            PushError::Closed => Outcome::DroppedClosed,
        }
    }
}

/// A connection's outgoing frames, bounded in bytes. Producers push without waiting; the
/// connection's writer takes everything queued at once and writes it in one batch.
pub(crate) struct SendQueue {
    state: Mutex<QueueState>,
    notify: Notify,
    /// Woken when the queue overflows, so a writer stuck on a socket that stopped draining
    /// lets go at once instead of at the write timeout.
    overflow: Notify,
    max_bytes: usize,
}

struct QueueState {
    frames: VecDeque<Frame>,
    bytes: usize,
    /// Set once; the first reason to close wins.
    closing: Option<CloseReason>,
}

impl QueueState {
    /// Moves every queued frame to the end of `into`.
    fn drain_into(&mut self, into: &mut Vec<Frame>) {
        into.extend(self.frames.drain(..));
        self.bytes = 0;
    }
}

impl SendQueue {
    pub(crate) fn new(max_bytes: usize) -> SendQueue {
        SendQueue {
            state: Mutex::new(QueueState {
                frames: VecDeque::new(),
                bytes: 0,
                closing: None,
            }),
            notify: Notify::new(),
            overflow: Notify::new(),
            max_bytes,
        }
    }

    /// Appends a frame and wakes the writer. A frame that would take the queue over its byte
    /// bound closes the connection as a slow consumer rather than growing without limit or
    /// blocking the caller.
    pub(crate) fn push(&self, frame: Frame) -> Result<(), PushError> {
        self.append(frame)?;
        self.wake_writer();
        Ok(())
    }

    /// As [`SendQueue::push`], but a frame accepted does not wake the writer: the caller writes
    /// it or wakes the writer itself ([`Connection::push`]). An overflow still wakes it.
    fn append(&self, frame: Frame) -> Result<(), PushError> {
        let mut state = lock(&self.state);
        if state.closing.is_some() {
            return Err(PushError::Closed);
        }
        let len = frame.payload.len();
        if state.bytes + len > self.max_bytes && !state.frames.is_empty() {
            state.closing = Some(CloseReason::SlowConsumer);
            drop(state);
            self.notify.notify_one();
            self.overflow.notify_one();
            return Err(PushError::Overflow);
        }
        state.bytes += len;
        state.frames.push_back(frame);
        Ok(())
    }

    /// Wakes the writer to look at the queue.
    fn wake_writer(&self) {
        self.notify.notify_one();
    }

    /// Appends a replayed offline event. The byte bound does not apply: the offline queue that
    /// held the event is bounded itself, and a replay larger than the send queue must not close
    /// the very connection it is meant for.
    fn push_replay(&self, frame: Frame) {
        let mut state = lock(&self.state);
        state.bytes += frame.payload.len();
        state.frames.push_back(frame);
    }

    /// Marks the connection as closing; frames pushed afterwards are refused. Returns whether
    /// this call set the reason (the first reason wins).
    pub(crate) fn close(&self, reason: CloseReason) -> bool {
        let mut state = lock(&self.state);
        let first = state.closing.is_none();
        if first {
            state.closing = Some(reason);
        }
        drop(state);
        self.notify.notify_one();
        if first && reason == CloseReason::SlowConsumer {
            self.overflow.notify_one();
        }
        first
    }

    /// Takes every queued frame, appending them to `into`, and reports whether the connection is
    /// closing.
    pub(crate) fn take(&self, into: &mut Vec<Frame>) -> Option<CloseReason> {
        let mut state = lock(&self.state);
        state.drain_into(into);
        state.closing
    }

    /// Takes every queued frame, appending them to `into`, unless the connection is closing:
    /// then it takes nothing and returns `false`, leaving the frames and the close to the writer.
    pub(crate) fn take_open(&self, into: &mut Vec<Frame>) -> bool {
        let mut state = lock(&self.state);
        if state.closing.is_some() {
            return false;
        }
        state.drain_into(into);
        true
    }

    /// Takes every queued frame and returns their payloads, for tests to read.
    #[cfg(test)]
    pub(crate) fn take_payloads(&self) -> Vec<String> {
        let mut frames = Vec::new();
        self.take(&mut frames);
        frames
            .iter()
            .map(|f| f.payload.as_str().to_owned())
            .collect()
    }

    /// Why the connection is closing, if it is.
    pub(crate) fn closing(&self) -> Option<CloseReason> {
        lock(&self.state).closing
    }

    /// Waits until something was pushed or the queue was closed since the last wait.
    pub(crate) async fn changed(&self) {
        self.notify.notified().await;
    }

    /// Returns once the queue has overflowed: the connection is closing as a slow consumer.
    pub(crate) async fn overflowed(&self) {
        loop {
            if lock(&self.state).closing == Some(CloseReason::SlowConsumer) {
                return;
            }
            // `notify_one` keeps a permit when no one waits, so an overflow between the look
            // above and this wait is not missed.
            self.overflow.notified().await;
        }
    }
}

/// A way to write a connection's queued frames from the task that queued them, without waiting
/// and without ever writing out of the queue's order.
pub(crate) trait WriteThrough: Send + Sync {
    /// Writes what `connection` has queued, if that can start at once. Returns `false` when the
    /// writer task must be woken: the socket was busy, the connection is closing, or the write
    /// started and must be finished by the writer.
    fn write_now(&self, connection: &Connection) -> bool;
}

/// One live client connection as the registry sees it.
pub(crate) struct Connection {
    pub(crate) id: u64,
    pub(crate) user_id: Arc<str>,
    pub(crate) queue: SendQueue,
    /// Set by the connection's writer once it runs; until then, frames wait for the writer.
    write_through: OnceLock<Arc<dyn WriteThrough>>,
    /// Per origin ([`Origin::index`]), one more than the last second (of
    /// [`Metrics::second_of`]) in which it was sent a frame of that origin; 0 for never.
    served_in: [AtomicU32; Origin::COUNT],
    /// Per origin, a bit set once it lost a frame of that origin to a client cause.
    lost_to_client: AtomicU8,
}

// One bit per origin in `lost_to_client`.
const _: () = assert!(Origin::COUNT <= u8::BITS as usize);

impl Connection {
    fn new(id: u64, user_id: Arc<str>, send_queue_bytes: usize) -> Connection {
        Connection {
            id,
            user_id,
            queue: SendQueue::new(send_queue_bytes),
            write_through: OnceLock::new(),
            served_in: Default::default(),
            lost_to_client: AtomicU8::new(0),
        }
    }

    /// Lets the tasks that push frames write them ([`Connection::push`]). Set once; a second
    /// call changes nothing.
    pub(crate) fn set_write_through(&self, write_through: Arc<dyn WriteThrough>) {
        let _ = self.write_through.set(write_through);
    }

    /// Queues an event's frame and writes it from the calling task when the socket is free,
    /// saving the writer task's wake-up; otherwise wakes the writer, as [`SendQueue::push`].
    pub(crate) fn push(&self, frame: Frame) -> Result<(), PushError> {
        self.queue.append(frame)?;
        let written = self
            .write_through
            .get()
            .is_some_and(|write_through| write_through.write_now(self));
        if !written {
            self.queue.wake_writer();
        }
        Ok(())
    }

    /// The connection id as clients and logs see it.
    pub(crate) fn wire_id(&self) -> String {
        format!("conn-{:x}", self.id)
    }

    /// Notes that `origin` attempts a frame to this connection in `second` (of
    /// [`Metrics::second_of`]): counts one served connection-second the first time in each
    /// second. One relaxed load per frame, a store and a counter increment once a second: the
    /// evidence the guard needs to tell one bad connection from many, at no cost worth measuring.
    pub(crate) fn note_served(&self, origin: Origin, second: u32, metrics: &Metrics) {
        let mark = second.saturating_add(1);
        let slot = &self.served_in[origin.index()];
        if slot.load(Ordering::Relaxed) != mark && slot.swap(mark, Ordering::Relaxed) != mark {
            metrics.connection_second_served(origin);
        }
    }

    /// Counts `n` frames of `origin` this connection did not get, with their outcome; a
    /// client-caused loss also counts the connection, once per origin.
    pub(crate) fn count_lost(&self, origin: Origin, outcome: Outcome, n: u64, metrics: &Metrics) {
        if n == 0 {
            return;
        }
        metrics.deliveries(origin, outcome, n);
        if outcome.cause() == Cause::Client {
            let bit = 1u8 << origin.index();
            if self.lost_to_client.load(Ordering::Relaxed) & bit == 0
                && self.lost_to_client.fetch_or(bit, Ordering::Relaxed) & bit == 0
            {
                metrics.client_drop_connection(origin);
            }
        }
    }
}

/// An event kept for an offline user, already encoded with `"recovered": true`.
struct OfflineEvent {
    payload: Utf8Bytes,
    origin: Origin,
    accepted_at: Instant,
    queued_at: Instant,
}

#[derive(Default)]
struct UserEntry {
    connections: Vec<Arc<Connection>>,
    offline: VecDeque<OfflineEvent>,
}

type Shard = Mutex<HashMap<Arc<str>, UserEntry>>;

/// Limits the registry enforces.
#[derive(Debug, Clone)]
pub(crate) struct RegistryLimits {
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_user: usize,
    pub(crate) send_queue_bytes: usize,
    pub(crate) offline_queue_len: usize,
    pub(crate) offline_ttl: Duration,
    /// All offline queues together, in payload bytes: a producer addressing endless distinct
    /// user ids must not be able to grow memory without bound.
    pub(crate) offline_total_bytes: usize,
}

/// Why a connection could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RegisterError {
    #[error("user already has the maximum of {limit} connections")]
    TooManyForUser { limit: usize },
}

/// Every live connection, by user.
pub(crate) struct Registry {
    shards: Box<[Shard]>,
    hasher: std::collections::hash_map::RandomState,
    limits: RegistryLimits,
    metrics: Arc<Metrics>,
    next_connection_id: AtomicU64,
    n_connections: AtomicUsize,
    /// Payload bytes held in every offline queue together.
    offline_bytes: AtomicUsize,
}

/// A reserved place under the process-wide connection limit, released on drop.
pub(crate) struct ConnectionSlot {
    registry: Arc<Registry>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.registry.n_connections.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Registry {
    pub(crate) fn new(limits: RegistryLimits, metrics: Arc<Metrics>) -> Registry {
        Registry {
            shards: (0..N_SHARDS).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
            limits,
            metrics,
            next_connection_id: AtomicU64::new(1),
            n_connections: AtomicUsize::new(0),
            offline_bytes: AtomicUsize::new(0),
        }
    }

    /// Reserves a place for one more connection, or `None` when the process is at its limit.
    pub(crate) fn try_reserve(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let max = self.limits.max_connections;
        self.n_connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnectionSlot {
                registry: Arc::clone(self),
            })
    }

    fn shard_index(&self, user_id: &str) -> usize {
        (self.hasher.hash_one(user_id) as usize) % self.shards.len()
    }

    fn shard(&self, user_id: &str) -> MutexGuard<'_, HashMap<Arc<str>, UserEntry>> {
        lock(&self.shards[self.shard_index(user_id)])
    }

    /// Registers a connection for `user_id`. Under the user's lock, its send queue first gets the
    /// frame `greeting` builds from the connection id, then every unexpired offline event in
    /// order, so no event published meanwhile can overtake them.
    pub(crate) fn register(
        &self,
        user_id: &str,
        greeting: impl FnOnce(&Connection) -> Utf8Bytes,
    ) -> Result<Arc<Connection>, RegisterError> {
        self.register_with_replay(user_id, greeting, std::iter::empty())
    }

    /// As [`Registry::register`], with `replay` (a fleet's offline events, taken from Redis)
    /// queued right after the greeting under the same lock.
    pub(crate) fn register_with_replay(
        &self,
        user_id: &str,
        greeting: impl FnOnce(&Connection) -> Utf8Bytes,
        replay: impl Iterator<Item = Frame>,
    ) -> Result<Arc<Connection>, RegisterError> {
        let now = Instant::now();
        let mut shard = self.shard(user_id);
        let (key, entry) = match shard.get_key_value(user_id) {
            Some((key, _)) => {
                let key = Arc::clone(key);
                let entry = shard
                    .get_mut(user_id)
                    .expect("looked up under the same lock");
                (key, entry)
            }
            None => {
                let key: Arc<str> = Arc::from(user_id);
                (Arc::clone(&key), shard.entry(key).or_default())
            }
        };
        if entry.connections.len() >= self.limits.max_connections_per_user {
            let limit = self.limits.max_connections_per_user;
            if entry.connections.is_empty() && entry.offline.is_empty() {
                shard.remove(user_id);
            }
            return Err(RegisterError::TooManyForUser { limit });
        }
        let connection = Arc::new(Connection::new(
            self.next_connection_id.fetch_add(1, Ordering::Relaxed),
            key,
            self.limits.send_queue_bytes,
        ));
        let greeting = greeting(&connection);
        connection
            .queue
            .push(Frame::control(greeting))
            .expect("a new queue accepts its first frame");
        replay.for_each(|frame| connection.queue.push_replay(frame));
        self.expire_offline(entry, now);
        for event in entry.offline.drain(..) {
            self.offline_bytes
                .fetch_sub(event.payload.len(), Ordering::Relaxed);
            connection.queue.push_replay(Frame {
                payload: event.payload,
                origin: Some(event.origin),
                accepted_at: event.accepted_at,
            });
        }
        if entry.connections.is_empty() {
            self.metrics.connected_users.inc();
        }
        entry.connections.push(Arc::clone(&connection));
        self.metrics.connections.inc();
        Ok(connection)
    }

    /// Removes a connection. Frames still in its queue are the writer's to count.
    pub(crate) fn unregister(&self, connection: &Connection) {
        let mut shard = self.shard(&connection.user_id);
        let Some(entry) = shard.get_mut(&*connection.user_id) else {
            return;
        };
        let before = entry.connections.len();
        entry.connections.retain(|c| c.id != connection.id);
        if entry.connections.len() == before {
            return;
        }
        self.metrics.connections.dec();
        if entry.connections.is_empty() {
            self.metrics.connected_users.dec();
            if entry.offline.is_empty() {
                shard.remove(&*connection.user_id);
            }
        }
    }

    /// Runs `f` with the user's state locked, so that what it reads and what it enqueues form one
    /// step in that user's order. `f` must not block.
    pub(crate) fn with_user<R>(&self, user_id: &str, f: impl FnOnce(&mut UserView<'_>) -> R) -> R {
        let mut shard = self.shard(user_id);
        self.view_in(&mut shard, user_id, f)
    }

    /// As [`Registry::with_user`], and with the live connections of `peek` read at the same
    /// moment, both users' shards held together: the shadow path's view of the same instant.
    /// Shards are always locked in index order, so two callers can never wait on each other.
    pub(crate) fn with_user_and_peek<R>(
        &self,
        user_id: &str,
        peek: Option<&str>,
        f: impl FnOnce(&mut UserView<'_>, Option<Vec<Recipient>>) -> R,
    ) -> R {
        let Some(peek) = peek.filter(|peek| *peek != user_id) else {
            return self.with_user(user_id, |view| f(view, None));
        };
        let snapshot = |shard: &HashMap<Arc<str>, UserEntry>| {
            shard
                .get(peek)
                .map_or_else(Vec::new, |entry| connection_recipients(&entry.connections))
        };
        let (mine, theirs) = (self.shard_index(user_id), self.shard_index(peek));
        if mine == theirs {
            let mut shard = lock(&self.shards[mine]);
            let peeked = snapshot(&shard);
            return self.view_in(&mut shard, user_id, |view| f(view, Some(peeked)));
        }
        let (first, second) = (mine.min(theirs), mine.max(theirs));
        let first_guard = lock(&self.shards[first]);
        let second_guard = lock(&self.shards[second]);
        let (mut my_shard, their_shard) = if mine == first {
            (first_guard, second_guard)
        } else {
            (second_guard, first_guard)
        };
        let peeked = snapshot(&their_shard);
        self.view_in(&mut my_shard, user_id, |view| f(view, Some(peeked)))
    }

    fn view_in<R>(
        &self,
        shard: &mut HashMap<Arc<str>, UserEntry>,
        user_id: &str,
        f: impl FnOnce(&mut UserView<'_>) -> R,
    ) -> R {
        let mut view = UserView {
            entry: shard.get_mut(user_id),
            new_entry: None,
            registry: self,
            now: Instant::now(),
        };
        let result = f(&mut view);
        let new_entry = view.new_entry.take();
        drop(view);
        if let Some(entry) = new_entry {
            shard.insert(Arc::from(user_id), entry);
        }
        result
    }

    /// Sweeps expired offline events away every `period` until `shutdown`.
    pub(crate) async fn sweep_every(
        self: Arc<Self>,
        period: Duration,
        shutdown: CancellationToken,
    ) {
        let mut interval = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = interval.tick() => self.sweep_offline(),
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Drops expired offline events everywhere, and users left with nothing.
    pub(crate) fn sweep_offline(&self) {
        let now = Instant::now();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            shard.retain(|_, entry| {
                self.expire_offline(entry, now);
                !entry.connections.is_empty() || !entry.offline.is_empty()
            });
        }
    }

    /// The users with at least one live connection.
    pub(crate) fn connected_users(&self) -> Vec<Arc<str>> {
        let mut users = Vec::new();
        for shard in self.shards.iter() {
            users.extend(
                lock(shard)
                    .iter()
                    .filter(|(_, entry)| !entry.connections.is_empty())
                    .map(|(user, _)| Arc::clone(user)),
            );
        }
        users
    }

    pub(crate) fn n_connections(&self) -> usize {
        self.n_connections.load(Ordering::Acquire)
    }

    fn discard_offline(&self, event: Option<OfflineEvent>) {
        if let Some(event) = event {
            self.offline_bytes
                .fetch_sub(event.payload.len(), Ordering::Relaxed);
        }
    }

    fn expire_offline(&self, entry: &mut UserEntry, now: Instant) {
        while let Some(front) = entry.offline.front() {
            if now.duration_since(front.queued_at) < self.limits.offline_ttl {
                break;
            }
            let origin = front.origin;
            self.discard_offline(entry.offline.pop_front());
            self.metrics.deliveries(origin, Outcome::OfflineDropped, 1);
        }
    }
}

/// A user's state, locked, as a path sees it while planning and enqueueing one event.
pub(crate) struct UserView<'a> {
    entry: Option<&'a mut UserEntry>,
    new_entry: Option<UserEntry>,
    registry: &'a Registry,
    now: Instant,
}

impl UserView<'_> {
    /// The user's live connections, in registration order.
    pub(crate) fn connections(&self) -> &[Arc<Connection>] {
        self.entry.as_deref().map_or(&[], |e| &e.connections)
    }

    /// Keeps an event for the user's next connection. Returns whether it was kept; the oldest
    /// event is evicted (and counted) when the queue is full.
    pub(crate) fn queue_offline(
        &mut self,
        payload: Utf8Bytes,
        origin: Origin,
        accepted_at: Instant,
    ) -> bool {
        let registry = self.registry;
        let max = registry.limits.offline_queue_len;
        if max == 0 {
            registry
                .metrics
                .deliveries(origin, Outcome::OfflineDropped, 1);
            return false;
        }
        let entry = match self.entry.as_deref_mut() {
            Some(entry) => entry,
            None => self.new_entry.get_or_insert_with(UserEntry::default),
        };
        registry.expire_offline(entry, self.now);
        if entry.offline.len() >= max
            && let Some(evicted) = entry.offline.pop_front()
        {
            registry
                .metrics
                .deliveries(evicted.origin, Outcome::OfflineDropped, 1);
            registry.discard_offline(Some(evicted));
        }
        let len = payload.len();
        let total = registry.offline_bytes.fetch_add(len, Ordering::Relaxed) + len;
        if total > registry.limits.offline_total_bytes {
            registry.offline_bytes.fetch_sub(len, Ordering::Relaxed);
            registry
                .metrics
                .deliveries(origin, Outcome::OfflineDropped, 1);
            return false;
        }
        entry.offline.push_back(OfflineEvent {
            payload,
            origin,
            accepted_at,
            queued_at: self.now,
        });
        registry
            .metrics
            .deliveries(origin, Outcome::OfflineQueued, 1);
        true
    }
}

/// Where a plan would send an event.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Recipient {
    /// A live connection, with the user it belongs to.
    Connection { id: u64, user_id: Arc<str> },
    /// The user's offline queue (SSOT, for a user with no connection).
    OfflineQueue { user_id: String },
}

impl Recipient {
    pub(crate) fn user_id(&self) -> &str {
        match self {
            Recipient::Connection { user_id, .. } => user_id,
            Recipient::OfflineQueue { user_id } => user_id,
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Recipient::Connection { id, user_id } => format!("connection {id:x} of {user_id:?}"),
            Recipient::OfflineQueue { user_id } => format!("offline queue of {user_id:?}"),
        }
    }
}

/// The recipients a set of live connections makes.
pub(crate) fn connection_recipients(connections: &[Arc<Connection>]) -> Vec<Recipient> {
    connections
        .iter()
        .map(|c| Recipient::Connection {
            id: c.id,
            user_id: Arc::clone(&c.user_id),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{PathKind, Route};

    const ORIGIN: Origin = Origin {
        route: Route::Broadcast,
        path: PathKind::Ssot,
    };

    fn registry(offline_queue_len: usize, send_queue_bytes: usize) -> Registry {
        Registry::new(
            RegistryLimits {
                max_connections: 100,
                max_connections_per_user: 2,
                send_queue_bytes,
                offline_queue_len,
                offline_ttl: Duration::from_secs(300),
                offline_total_bytes: 20,
            },
            Arc::new(Metrics::new()),
        )
    }

    fn queued(connection: &Connection) -> Vec<String> {
        connection.queue.take_payloads()
    }

    fn offline(registry: &Registry, user: &str, payload: &str) -> bool {
        registry.with_user(user, |view| {
            view.queue_offline(Utf8Bytes::from(payload), ORIGIN, Instant::now())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn offline_queue_keeps_the_newest_events_and_replays_them_once() {
        let registry = registry(3, 1 << 20);
        for n in 1..=5 {
            assert!(offline(&registry, "alice", &format!("e{n}")));
        }
        let first = registry.register("alice", |_| "hello".into()).unwrap();
        assert_eq!(queued(&first), ["hello", "e3", "e4", "e5"]);
        let second = registry.register("alice", |_| "hello".into()).unwrap();
        assert_eq!(
            queued(&second),
            ["hello"],
            "offline events replay exactly once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn offline_events_expire_after_the_ttl() {
        let registry = registry(50, 1 << 20);
        assert!(offline(&registry, "bob", "old"));
        tokio::time::advance(Duration::from_secs(200)).await;
        assert!(offline(&registry, "bob", "newer"));
        tokio::time::advance(Duration::from_secs(101)).await;
        let connection = registry.register("bob", |_| "hello".into()).unwrap();
        assert_eq!(queued(&connection), ["hello", "newer"]);
    }

    #[tokio::test(start_paused = true)]
    async fn sweep_forgets_users_whose_events_all_expired() {
        let registry = registry(50, 1 << 20);
        assert!(offline(&registry, "carol", "x"));
        tokio::time::advance(Duration::from_secs(301)).await;
        registry.sweep_offline();
        let n_users: usize = registry.shards.iter().map(|s| lock(s).len()).sum();
        assert_eq!(n_users, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn all_offline_queues_together_are_bounded_in_bytes() {
        let registry = registry(50, 1 << 20);
        assert!(offline(&registry, "u1", "0123456789"));
        assert!(offline(&registry, "u2", "0123456789"));
        assert!(!offline(&registry, "u3", "x"), "over the 20-byte total");
        // Replaying frees the room.
        let connection = registry.register("u1", |_| "hello".into()).unwrap();
        assert_eq!(queued(&connection), ["hello", "0123456789"]);
        assert!(offline(&registry, "u3", "x"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_replay_larger_than_the_send_queue_is_delivered_whole() {
        let registry = registry(50, 8);
        assert!(offline(&registry, "big", "0123456"));
        assert!(offline(&registry, "big", "6543210"));
        let connection = registry.register("big", |_| "hi".into()).unwrap();
        assert_eq!(queued(&connection), ["hi", "0123456", "6543210"]);
    }

    #[test]
    fn per_user_connection_limit_is_enforced_and_released() {
        let registry = registry(0, 1 << 20);
        let a = registry.register("dave", |_| "hi".into()).unwrap();
        let _b = registry.register("dave", |_| "hi".into()).unwrap();
        assert_eq!(
            registry.register("dave", |_| "hi".into()).err(),
            Some(RegisterError::TooManyForUser { limit: 2 })
        );
        registry.unregister(&a);
        assert!(registry.register("dave", |_| "hi".into()).is_ok());
    }

    #[test]
    fn send_queue_overflow_closes_as_slow_consumer() {
        let queue = SendQueue::new(10);
        assert_eq!(queue.push(Frame::control("123456".into())), Ok(()));
        assert_eq!(
            queue.push(Frame::control("123456".into())),
            Err(PushError::Overflow)
        );
        assert_eq!(queue.closing(), Some(CloseReason::SlowConsumer));
        assert_eq!(
            queue.push(Frame::control("1".into())),
            Err(PushError::Closed)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_writer_waiting_for_an_overflow_wakes_at_once_and_only_for_one() {
        let queue = Arc::new(SendQueue::new(10));
        let waiter = tokio::spawn({
            let queue = Arc::clone(&queue);
            async move { queue.overflowed().await }
        });
        assert_eq!(queue.push(Frame::control("123456".into())), Ok(()));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "a push that fits is no overflow");
        assert_eq!(
            queue.push(Frame::control("123456".into())),
            Err(PushError::Overflow)
        );
        tokio::time::timeout(Duration::from_millis(1), waiter)
            .await
            .expect("the overflow wakes the waiter")
            .unwrap();
        // Another close reason is not an overflow.
        let other = SendQueue::new(10);
        other.close(CloseReason::Shutdown);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), other.overflowed())
                .await
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn client_caused_losses_count_each_connection_once_per_origin() {
        let metrics = Metrics::new();
        let registry = registry(0, 1 << 20);
        let connection = registry.register("erin", |_| "hi".into()).unwrap();
        let other = Origin {
            route: Route::UserEvent,
            path: PathKind::Legacy,
        };
        connection.count_lost(ORIGIN, Outcome::DroppedSlowConsumer, 5, &metrics);
        connection.count_lost(ORIGIN, Outcome::DroppedClosed, 2, &metrics);
        connection.count_lost(other, Outcome::WriteError, 3, &metrics);
        assert_eq!(
            metrics.client_drop_connection_count(ORIGIN.route, ORIGIN.path),
            1
        );
        assert_eq!(
            metrics.client_drop_connection_count(other.route, other.path),
            0,
            "a path-caused loss is not the client's"
        );
        assert_eq!(
            metrics.delivery_count(ORIGIN.route, ORIGIN.path, Outcome::DroppedSlowConsumer),
            5
        );
        // Served connection-seconds: once per second, however many frames.
        let start = metrics.second_of(Instant::now());
        let later = metrics.second_of(Instant::now() + Duration::from_millis(1500));
        assert_eq!(later, start + 1);
        for _ in 0..3 {
            connection.note_served(ORIGIN, start, &metrics);
        }
        connection.note_served(ORIGIN, later, &metrics);
        connection.note_served(other, later, &metrics);
        assert_eq!(
            metrics.served_connection_second_count(ORIGIN.route, ORIGIN.path),
            2
        );
        assert_eq!(
            metrics.served_connection_second_count(other.route, other.path),
            1
        );
    }

    #[test]
    fn an_oversized_frame_is_accepted_into_an_empty_queue() {
        // A frame larger than the bound alone must still be deliverable, or a big event
        // would close every connection it was sent to.
        let queue = SendQueue::new(4);
        assert_eq!(queue.push(Frame::control("123456".into())), Ok(()));
        let mut frames = Vec::new();
        assert_eq!(queue.take(&mut frames), None);
        assert_eq!(frames.len(), 1);
    }
}
