//! The Redis backplane: this node's side of a fleet of gateways sharing one Redis.
//!
//! Per user, Redis holds a presence hash (node → that user's connections there) and an offline
//! stream (SSOT events kept while no node holds the user). Per node, one pub/sub channel. A
//! producer call is decided here (one flag snapshot) and published by one Lua script
//! ([`scripts::PUBLISH`]) to the channels of the nodes in the user's presence; each of those
//! nodes carries out the decision for its own connections in the order its channel delivers,
//! which is the order the scripts ran in, and sends back its counts ([`Fleet::serve`] waits for
//! them, bounded by `ack_timeout_ms`). A connection joins through [`scripts::JOIN`], which
//! sends its offline replay down the same channel, so nothing newer can overtake it.
//!
//! When Redis cannot be reached, nothing here blocks or fails the process: calls are served for
//! this node's own connections only, the answer says so, and `backplane_up` is 0 until the
//! subscriber is back.

mod audit;
mod flags;
pub(crate) mod presence;
mod subscriber;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use crate::backplane::message::{self, AckMessage, EventMessage};
use crate::backplane::scripts;
use crate::config::BackplaneConfig;
use crate::faults::Faults;
use crate::flags::store::FlagStore;
use crate::labels::{BackplaneOp, Outcome, Role};
use crate::metrics::Metrics;
use crate::mutex::lock;
use crate::paths::{self, Call, Delivery, Outlet, Prepared, Served, implementation};
use crate::registry::{Connection, RegisterError, Registry};
use crate::route::{Decision, Origin, Route};
use crate::shadow::Shadow;

/// What is added to a call's `errors` when it could reach only this node's connections.
pub(crate) const DEGRADED_ERROR: &str = "backplane unavailable: delivered to this node's connections only; no cross-node delivery or offline queueing";

/// How long a connection waits for its join to come back through its node's channel before it
/// is served by this node alone.
const JOIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Builds a connection's greeting from its id.
pub(crate) type Greeting = Box<dyn FnOnce(&Connection) -> Utf8Bytes + Send>;

/// The parts of the gateway a fleet node delivers with.
pub(crate) struct FleetParts {
    pub(crate) registry: Arc<Registry>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) faults: Arc<Faults>,
    pub(crate) shadow: Arc<Shadow>,
    pub(crate) flags: Arc<FlagStore>,
}

/// The offline queue's bounds in Redis (the registry's own is off in a fleet).
#[derive(Debug, Clone, Copy)]
pub(crate) struct OfflineLimits {
    pub(crate) len: usize,
    pub(crate) ttl: Duration,
}

/// This node's side of the fleet.
pub(crate) struct Fleet {
    config: BackplaneConfig,
    /// `{prefix}:node:` — a node's channel is this followed by its id.
    channel_prefix: String,
    offline: OfflineLimits,
    client: redis::Client,
    commands: ConnectionManager,
    scripts: Scripts,
    parts: FleetParts,
    /// Set while the subscriber is subscribed to this node's channel.
    subscribed: AtomicBool,
    next_id: AtomicU64,
    acks: std::sync::Mutex<HashMap<u64, PendingAck>>,
    joins: std::sync::Mutex<HashMap<u64, PendingJoin>>,
    /// Users whose presence may be wrong (a join or leave whose command failed): rewritten
    /// from the registry at the next heartbeat that reaches Redis.
    presence_dirty: std::sync::Mutex<HashSet<Arc<str>>>,
    view: std::sync::Mutex<presence::FleetView>,
    ack_queue: mpsc::UnboundedSender<(String, AckMessage)>,
    ack_receiver: std::sync::Mutex<Option<mpsc::UnboundedReceiver<(String, AckMessage)>>>,
}

struct Scripts {
    publish: redis::Script,
    join: redis::Script,
    leave: redis::Script,
    heartbeat: redis::Script,
    depart: redis::Script,
}

/// Counts gathered for one published event until every reached node answered.
#[derive(Default)]
struct PendingAck {
    attempted: usize,
    sent: usize,
    received: usize,
    notify: Arc<Notify>,
}

/// A connection waiting for its join to come back through this node's channel.
struct PendingJoin {
    user_id: Arc<str>,
    greeting: Greeting,
    done: oneshot::Sender<Result<Arc<Connection>, RegisterError>>,
}

/// Why the fleet could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("backplane.redis_url: {0}")]
pub(crate) struct FleetError(#[from] redis::RedisError);

impl Fleet {
    pub(crate) fn new(
        config: &BackplaneConfig,
        offline: OfflineLimits,
        parts: FleetParts,
    ) -> Result<Arc<Fleet>, FleetError> {
        let client = redis::Client::open(config.redis_url.as_str())?;
        // Commands fail fast while Redis is away (a producer call must not hang on it) and the
        // manager reconnects in the background with backoff.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2));
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)?;
        let (ack_queue, ack_receiver) = mpsc::unbounded_channel();
        Ok(Arc::new(Fleet {
            channel_prefix: format!("{}:node:", config.key_prefix),
            config: config.clone(),
            offline,
            client,
            commands,
            scripts: Scripts {
                publish: redis::Script::new(scripts::PUBLISH),
                join: redis::Script::new(scripts::JOIN),
                leave: redis::Script::new(scripts::LEAVE),
                heartbeat: redis::Script::new(scripts::HEARTBEAT),
                depart: redis::Script::new(scripts::DEPART),
            },
            parts,
            subscribed: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            acks: Default::default(),
            joins: Default::default(),
            presence_dirty: Default::default(),
            view: Default::default(),
            ack_queue,
            ack_receiver: std::sync::Mutex::new(Some(ack_receiver)),
        }))
    }

    pub(crate) fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// Whether cross-node delivery works now: this node is subscribed to its channel.
    pub(crate) fn is_up(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }

    fn channel(&self, node: &str) -> String {
        format!("{}{node}", self.channel_prefix)
    }

    /// A user's keys, sharing the user's hash tag so one script may touch them all on Redis
    /// Cluster.
    fn user_keys(&self, user_id: &str) -> [String; 2] {
        let prefix = &self.config.key_prefix;
        [
            format!("{prefix}:{{u:{user_id}}}:nodes"),
            format!("{prefix}:{{u:{user_id}}}:offline"),
        ]
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Serves one decided call for the whole fleet: the primary path prepares it here (a
    /// refusal is answered here, as by one process); then one script publishes it to every
    /// node holding the user, or queues it offline, and the nodes' counts are summed, waiting
    /// at most `ack_timeout_ms`. Without Redis, only this node's connections are served.
    pub(crate) async fn serve(
        &self,
        outlet: &Outlet<'_>,
        route: Route,
        (decision, flags_version): (&Decision, u64),
        call: &Call<'_>,
        accepted_at: Instant,
    ) -> Served {
        let origin = Origin {
            route,
            path: decision.primary,
        };
        let prepared = match implementation(decision.primary).prepare(call) {
            Ok(prepared) if self.is_up() => prepared,
            // Refused (counted as one process counts it), or no Redis: this node alone.
            _ => return self.serve_here(outlet, route, decision, call, accepted_at),
        };
        let metrics = &self.parts.metrics;
        if let Some(shadow) = decision.shadow {
            metrics.event(
                Origin {
                    route,
                    path: shadow,
                },
                Role::Shadow,
            );
        }
        metrics.event(origin, Role::Primary);
        let offline_entry = self.offline_entry(origin, &prepared);
        let request = self.next_id();
        let message = EventMessage {
            from_node: self.config.node_id.clone(),
            request,
            route,
            primary: decision.primary,
            shadow: decision.shadow,
            flags_version,
            user_id: call.user_id.to_owned(),
            event: call.event.clone(),
        }
        .encode();
        let notify = self.expect_acks(request);
        let published = self
            .publish(prepared.user_id, &message, &offline_entry)
            .await;
        let errors = (prepared.user_id.to_owned(), prepared.errors);
        let delivery = match published {
            Ok(reply) => {
                self.count_offline(origin, &reply, prepared.offline_event.is_some());
                let (attempted, sent) = self.await_acks(request, reply.reached, notify).await;
                Delivery {
                    connections_attempted: attempted,
                    successful_sends: sent,
                    queued: reply.queued,
                }
            }
            Err(()) => {
                lock(&self.acks).remove(&request);
                // Counted already above: served here without counting the event twice.
                let served = paths::serve_with(
                    outlet,
                    origin,
                    implementation(decision.primary),
                    None,
                    call,
                    accepted_at,
                );
                return degraded(served);
            }
        };
        Served {
            primary: Ok(errors),
            delivery,
            plans: None,
        }
    }

    /// The offline queue's copy of a prepared event (`"recovered": true`, with its origin), or
    /// empty when the path keeps nothing for offline users or the queue is off.
    fn offline_entry(&self, origin: Origin, prepared: &Prepared<'_>) -> String {
        match &prepared.offline_event {
            Some(event) if self.offline.len > 0 => {
                message::offline_entry(origin, event.recovered().as_str())
            }
            _ => String::new(),
        }
    }

    /// As one process serves a call: this node's connections only (offline queueing is off in
    /// the registry of a fleet node, so an offline user's event is counted `offline_dropped`).
    /// The caller submits the shadow plans, as for one process.
    fn serve_here(
        &self,
        outlet: &Outlet<'_>,
        route: Route,
        decision: &Decision,
        call: &Call<'_>,
        accepted_at: Instant,
    ) -> Served {
        let served = paths::serve(outlet, route, decision, call, accepted_at);
        if self.is_up() {
            served
        } else {
            degraded(served)
        }
    }

    /// Runs the publish script; `Err` (counted) when Redis did not answer.
    async fn publish(
        &self,
        user_id: &str,
        message: &[u8],
        offline_entry: &str,
    ) -> Result<PublishReply, ()> {
        let [nodes_key, offline_key] = self.user_keys(user_id);
        let dead = presence::dead_nodes(&lock(&self.view));
        let mut invocation = self.scripts.publish.key(nodes_key);
        invocation
            .key(offline_key)
            .arg(message)
            .arg(offline_entry)
            .arg(self.offline.len)
            .arg(self.offline.ttl.as_millis() as u64)
            .arg(&self.channel_prefix);
        for node in dead {
            invocation.arg(node);
        }
        let mut commands = self.commands.clone();
        let reply: Result<Vec<String>, _> = invocation.invoke_async(&mut commands).await;
        match reply {
            Ok(reply) => PublishReply::parse(reply).ok_or_else(|| {
                self.parts.metrics.backplane.error(BackplaneOp::Publish);
            }),
            Err(error) => {
                self.parts.metrics.backplane.error(BackplaneOp::Publish);
                tracing::warn!(%error, "backplane publish failed; serving this node's connections only");
                Err(())
            }
        }
    }

    /// Counts what the offline queue did, as one process counts it: a kept event, events
    /// expired or evicted to make room, and an event the path would keep with the queue off.
    fn count_offline(&self, origin: Origin, reply: &PublishReply, keepable: bool) {
        let metrics = &self.parts.metrics;
        if reply.queued {
            metrics.deliveries(origin, Outcome::OfflineQueued, 1);
        } else if reply.reached == 0 && keepable {
            metrics.deliveries(origin, Outcome::OfflineDropped, 1);
        }
        if reply.dropped > 0 {
            metrics.deliveries(origin, Outcome::OfflineDropped, reply.dropped);
        }
    }

    fn expect_acks(&self, request: u64) -> Arc<Notify> {
        let pending = PendingAck::default();
        let notify = Arc::clone(&pending.notify);
        lock(&self.acks).insert(request, pending);
        notify
    }

    /// Waits until `expected` nodes answered for `request` or `ack_timeout_ms` passed; a node
    /// that did not answer in time counts as nothing attempted and nothing sent.
    async fn await_acks(
        &self,
        request: u64,
        expected: usize,
        notify: Arc<Notify>,
    ) -> (usize, usize) {
        let deadline = Instant::now() + self.config.ack_timeout;
        loop {
            {
                let mut acks = lock(&self.acks);
                let done = acks
                    .get(&request)
                    .is_none_or(|pending| pending.received >= expected);
                if done || Instant::now() >= deadline {
                    let pending = acks.remove(&request).unwrap_or_default();
                    if pending.received < expected {
                        for _ in pending.received..expected {
                            self.parts.metrics.backplane.error(BackplaneOp::AckTimeout);
                        }
                    }
                    return (pending.attempted, pending.sent);
                }
            }
            // `notify_one` keeps a permit, so an ack between the look above and this wait is
            // not missed.
            let _ = tokio::time::timeout_at(deadline, notify.notified()).await;
        }
    }

    /// Adds one node's counts to a call waiting here.
    fn record_ack(&self, ack: AckMessage) {
        let mut acks = lock(&self.acks);
        if let Some(pending) = acks.get_mut(&ack.request) {
            pending.attempted += ack.attempted;
            pending.sent += ack.sent;
            pending.received += 1;
            pending.notify.notify_one();
        }
    }

    /// Registers a connection for the fleet: counted in the user's presence and given the
    /// user's offline events first, through this node's channel, so that nothing published
    /// for the user after it joined can arrive before them. Without Redis (or if the join does
    /// not come back within [`JOIN_TIMEOUT`]) it is registered here alone.
    pub(crate) async fn register(
        &self,
        user_id: &str,
        greeting: Greeting,
    ) -> Result<Arc<Connection>, RegisterError> {
        if !self.is_up() {
            return self.parts.registry.register(user_id, greeting);
        }
        let join = self.next_id();
        let (done, outcome) = oneshot::channel();
        lock(&self.joins).insert(
            join,
            PendingJoin {
                user_id: Arc::from(user_id),
                greeting,
                done,
            },
        );
        let mut outcome = outcome;
        if self.run_join(user_id, join).await
            && let Ok(Ok(result)) = tokio::time::timeout(JOIN_TIMEOUT, &mut outcome).await
        {
            return result;
        }
        // Not joined, or it did not come back in time: the connection is served here alone,
        // unless the subscriber took the join meanwhile and is registering it right now.
        let pending = lock(&self.joins).remove(&join);
        match pending {
            Some(pending) => self.parts.registry.register(user_id, pending.greeting),
            // The subscriber always answers a join it took.
            None => outcome
                .await
                .unwrap_or(Err(RegisterError::TooManyForUser { limit: 0 })),
        }
    }

    async fn run_join(&self, user_id: &str, join: u64) -> bool {
        let [nodes_key, offline_key] = self.user_keys(user_id);
        let mut commands = self.commands.clone();
        let reply: Result<i64, _> = self
            .scripts
            .join
            .key(nodes_key)
            .key(offline_key)
            .arg(self.channel(&self.config.node_id))
            .arg(&self.config.node_id)
            .arg(message::join_header(join))
            .arg(self.offline.ttl.as_millis() as u64)
            .invoke_async(&mut commands)
            .await;
        match reply {
            Ok(replayed) if replayed >= 0 => true,
            Ok(_) => false,
            Err(error) => {
                self.parts.metrics.backplane.error(BackplaneOp::Join);
                tracing::warn!(%error, "backplane join failed; serving the connection here alone");
                lock(&self.presence_dirty).insert(Arc::from(user_id));
                false
            }
        }
    }

    /// Removes a connection here and, when it was the user's last here, from the fleet's
    /// presence (in the background: a leaving client waits for nothing).
    pub(crate) fn unregister(self: &Arc<Self>, connection: &Arc<Connection>) {
        self.parts.registry.unregister(connection);
        let fleet = Arc::clone(self);
        let user_id = Arc::clone(&connection.user_id);
        tokio::spawn(async move { fleet.leave(user_id).await });
    }

    async fn leave(&self, user_id: Arc<str>) {
        let [nodes_key, _] = self.user_keys(&user_id);
        let mut commands = self.commands.clone();
        let reply: Result<i64, _> = self
            .scripts
            .leave
            .key(nodes_key)
            .arg(&self.config.node_id)
            .invoke_async(&mut commands)
            .await;
        if let Err(error) = reply {
            self.parts.metrics.backplane.error(BackplaneOp::Leave);
            tracing::debug!(%error, "backplane leave failed; presence is corrected on reconnect");
            lock(&self.presence_dirty).insert(user_id);
        }
    }
}

/// A call served by this node alone, saying so in its answer.
fn degraded(mut served: Served) -> Served {
    if let Ok((_, errors)) = &mut served.primary {
        errors.push(DEGRADED_ERROR.to_owned());
    }
    served
}

/// What the publish script answered.
struct PublishReply {
    queued: bool,
    dropped: u64,
    /// How many nodes received the event (and will answer with their counts).
    reached: usize,
}

impl PublishReply {
    fn parse(reply: Vec<String>) -> Option<PublishReply> {
        let mut fields = reply.into_iter();
        let queued = fields.next()? == "1";
        let dropped = fields.next()?.parse().ok()?;
        Some(PublishReply {
            queued,
            dropped,
            reached: fields.count(),
        })
    }
}
