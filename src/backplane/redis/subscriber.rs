//! This node's subscription to its own channel, and what it does with each message: carry out
//! an event for its connections and answer with the counts, register a joining connection with
//! its replay, or add another node's counts to a call waiting here.
//!
//! One task reads the channel and handles each message before the next, so this node applies
//! one user's events in the order the publish scripts ran, whichever node ran them.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Fleet;
use crate::backplane::message::{AckMessage, EventMessage, JoinMessage, Message};
use crate::flags::store::unix_now;
use crate::labels::{BackplaneOp, Outcome};
use crate::mutex::lock;
use crate::paths::{self, Call, Outlet, Sending, implementation};
use crate::registry::Frame;
use crate::route::Origin;
use crate::shadow::Comparison;

/// Reconnection backoff: the first retry, and the longest wait between two.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// How long one attempt to connect and subscribe may take.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Acks sent in one pipeline at most.
const ACK_BATCH: usize = 256;

impl Fleet {
    /// Keeps this node subscribed to its channel until shutdown, reconnecting with backoff;
    /// `backplane_up` says whether it is.
    pub(crate) async fn subscribe_until(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let channel = self.channel(&self.config.node_id);
            let attempt = tokio::time::timeout(SUBSCRIBE_TIMEOUT, async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                redis::RedisResult::Ok(pubsub)
            });
            let subscribed = tokio::select! {
                attempt = attempt => attempt,
                () = shutdown.cancelled() => return,
            };
            match subscribed {
                // The command connection may still be reconnecting: up only once this node's
                // presence is written again.
                Ok(Ok(pubsub)) if self.resync_presence_retrying(&shutdown).await => {
                    backoff = BACKOFF_MIN;
                    self.set_up(true);
                    tracing::info!(
                        node_id = self.config.node_id.as_str(),
                        "backplane subscribed"
                    );
                    let mut messages = pubsub.into_on_message();
                    loop {
                        tokio::select! {
                            message = messages.next() => match message {
                                Some(message) => self.handle(message.get_payload_bytes()),
                                None => break,
                            },
                            () = shutdown.cancelled() => return,
                        }
                    }
                    self.set_up(false);
                    self.parts.metrics.backplane.error(BackplaneOp::Subscribe);
                    tracing::warn!(
                        "backplane subscription lost; serving this node's connections only until it is back"
                    );
                }
                Ok(Err(error)) => {
                    self.parts.metrics.backplane.error(BackplaneOp::Subscribe);
                    tracing::debug!(%error, "backplane subscribe failed");
                }
                Ok(Ok(_)) | Err(_) => self.parts.metrics.backplane.error(BackplaneOp::Subscribe),
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn set_up(&self, up: bool) {
        self.subscribed.store(up, Ordering::Release);
        self.parts.metrics.backplane.up.set(i64::from(up));
    }

    /// [`Fleet::resync_presence`], tried a few times: whether it succeeded.
    async fn resync_presence_retrying(&self, shutdown: &CancellationToken) -> bool {
        let mut wait = BACKOFF_MIN;
        for _ in 0..5 {
            if self.resync_presence(true).await {
                return true;
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => return false,
            }
            wait *= 2;
        }
        false
    }

    /// Writes this node's presence from its registry: for every user it holds when `all`
    /// (after a reconnect, or when taken for dead), else for the users marked dirty (a join or
    /// leave whose command failed). A user with a join in flight is left for the next round,
    /// so its count cannot be written without the connection being counted. Returns whether
    /// it was written.
    pub(super) async fn resync_presence(&self, all: bool) -> bool {
        let mut users: HashSet<Arc<str>> = lock(&self.presence_dirty).drain().collect();
        if all {
            users.extend(self.parts.registry.connected_users());
        }
        let joining: HashSet<Arc<str>> = lock(&self.joins)
            .values()
            .map(|join| Arc::clone(&join.user_id))
            .collect();
        let (later, users): (Vec<_>, Vec<_>) =
            users.into_iter().partition(|user| joining.contains(user));
        lock(&self.presence_dirty).extend(later);
        let mut pipeline = redis::pipe();
        let node = &self.config.node_id;
        for user in &users {
            let [nodes_key, _] = self.user_keys(user);
            let n = self
                .parts
                .registry
                .with_user(user, |view| view.connections().len());
            if n > 0 {
                pipeline.hset(nodes_key, node, n).ignore();
            } else {
                pipeline.hdel(nodes_key, node).ignore();
            }
        }
        if pipeline.is_empty() {
            return true;
        }
        let mut commands = self.commands.clone();
        match pipeline.exec_async(&mut commands).await {
            Ok(()) => true,
            Err(error) => {
                self.parts.metrics.backplane.error(BackplaneOp::Join);
                tracing::warn!(%error, "writing this node's presence failed");
                lock(&self.presence_dirty).extend(users);
                false
            }
        }
    }

    fn handle(self: &Arc<Self>, bytes: &[u8]) {
        match Message::decode(bytes) {
            Ok(Message::Event(event)) => self.apply_event(event),
            Ok(Message::Join(join)) => self.apply_join(join),
            Ok(Message::Ack(ack)) => self.acks.record(ack),
            Err(error) => tracing::warn!(%error, "ignored a backplane message"),
        }
    }

    /// Carries out an event's decision for this node's connections of its user: the primary
    /// path delivers, the shadow path (if any) is planned against the same instant and
    /// compared here; then the counts go back to the node that took the call.
    fn apply_event(&self, event: EventMessage) {
        let origin = Origin {
            route: event.route,
            path: event.primary,
        };
        let outlet = Outlet {
            registry: &self.parts.registry,
            metrics: &self.parts.metrics,
            faults: &self.parts.faults,
            // Events arrive as a stream: the writers coalesce what queues meanwhile.
            sending: Sending::Queued,
        };
        let call = Call::new(&event.user_id, &event.event);
        let shadow = event.shadow.map(|kind| (kind, implementation(kind)));
        let started = Instant::now();
        let served = paths::serve_with(
            &outlet,
            origin,
            implementation(event.primary),
            shadow,
            &call,
            started,
        );
        self.parts
            .metrics
            .path_duration(origin)
            .observe(started.elapsed().as_secs_f64());
        if let Some((primary, shadow)) = served.plans {
            let flags = self.parts.flags.snapshot();
            self.parts.shadow.enqueue(Comparison {
                route: event.route,
                target: event.user_id.clone(),
                flags_version: event.flags_version,
                ignore_fields: flags.route(event.route).ignore_fields.clone(),
                primary,
                shadow,
                at: unix_now(),
            });
        }
        let ack = AckMessage {
            request: event.request,
            attempted: served.delivery.connections_attempted,
            sent: served.delivery.successful_sends,
        };
        if event.from_node == self.config.node_id {
            self.acks.record(ack);
        } else if self.ack_queue.send((event.from_node, ack)).is_err() {
            self.parts.metrics.backplane.error(BackplaneOp::Ack);
        }
    }

    /// Registers the connection a join names, its offline replay queued first.
    fn apply_join(self: &Arc<Self>, join: JoinMessage) {
        let pending = lock(&self.joins).remove(&join.join);
        let Some(pending) = pending else {
            // The connection stopped waiting and is served here alone: undo its presence, and
            // the replay it took is lost (counted).
            for (origin, _) in &join.replay {
                self.parts
                    .metrics
                    .deliveries(*origin, Outcome::OfflineDropped, 1);
            }
            self.parts.metrics.backplane.error(BackplaneOp::Join);
            return;
        };
        let now = Instant::now();
        let replay = join.replay.into_iter().map(|(origin, payload)| Frame {
            payload: payload.into(),
            origin: Some(origin),
            accepted_at: now,
        });
        let registered =
            self.parts
                .registry
                .register_with_replay(&pending.user_id, pending.greeting, replay);
        if let Err(Ok(connection)) = pending.done.send(registered) {
            // The client went away while joining.
            self.unregister(&connection);
        }
    }

    /// Sends other nodes their counts until shutdown, pipelining what has queued up.
    pub(crate) async fn send_acks(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(mut receiver) = lock(&self.ack_receiver).take() else {
            return;
        };
        let mut batch = Vec::with_capacity(ACK_BATCH);
        loop {
            let received = tokio::select! {
                n = receiver.recv_many(&mut batch, ACK_BATCH) => n,
                () = shutdown.cancelled() => return,
            };
            if received == 0 {
                return;
            }
            let mut pipeline = redis::pipe();
            for (node, ack) in batch.drain(..) {
                pipeline.publish(self.channel(&node), ack.encode()).ignore();
            }
            let mut commands = self.commands.clone();
            if let Err(error) = pipeline.exec_async(&mut commands).await {
                for _ in 0..received {
                    self.parts.metrics.backplane.error(BackplaneOp::Ack);
                }
                tracing::debug!(%error, "sending delivery counts failed");
            }
        }
    }
}
