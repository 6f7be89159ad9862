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

mod acks;
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
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::backplane::message::{self, AckMessage, EventMessage};
use crate::backplane::redis::acks::{AckWait, Acks};
use crate::backplane::scripts;
use crate::config::BackplaneConfig;
use crate::faults::Faults;
use crate::flags::store::FlagStore;
use crate::labels::{BackplaneOp, Outcome, Role};
use crate::metrics::Metrics;
use crate::mutex::lock;
use crate::paths::{self, Call, Decided, Delivery, Outlet, Prepared, Served, implementation};
use crate::registry::{Connection, RegisterError, Registry};
use crate::route::Origin;
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
    acks: Acks,
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
        decided: &Decided,
        call: &Call<'_>,
    ) -> Served {
        if !self.is_up() {
            return self.serve_here(outlet, decided, call);
        }
        let staged = match self.stage(outlet, decided, call) {
            Step::Here(served) => return served,
            Step::Fleet(staged) => staged,
        };
        let reply = self.publish(&staged).await;
        let deadline = Instant::now() + self.config.ack_timeout;
        self.finish(outlet, (decided, call), staged, reply, deadline)
            .await
    }

    /// Serves a producer batch for the whole fleet as [`Fleet::serve`] serves one call, but
    /// with one round trip to Redis for all of it: the items' publish scripts go in one
    /// pipeline, which Redis runs in the batch's order (each script still one user's, so the
    /// per-user order every connection sees is the scripts' order, as for single calls); then
    /// the acks of every item are awaited together, `ack_timeout_ms` bounding the whole batch.
    pub(crate) async fn serve_batch(
        &self,
        outlet: &Outlet<'_>,
        items: &[(Decided, Call<'_>)],
    ) -> Vec<Served> {
        // Decided once for the batch, so no item can be served here before an earlier one
        // went through Redis.
        if !self.is_up() {
            return items
                .iter()
                .map(|(decided, call)| self.serve_here(outlet, decided, call))
                .collect();
        }
        let steps: Vec<Step<'_>> = items
            .iter()
            .map(|(decided, call)| self.stage(outlet, decided, call))
            .collect();
        let staged: Vec<&Staged<'_>> = steps
            .iter()
            .filter_map(|step| match step {
                Step::Fleet(staged) => Some(staged),
                Step::Here(_) => None,
            })
            .collect();
        let replies = match staged.as_slice() {
            [] => Ok(Vec::new()),
            [one] => self.publish(one).await.map(|reply| vec![reply]),
            many => self.publish_many(many).await,
        };
        let deadline = Instant::now() + self.config.ack_timeout;
        let mut replies = replies.map(Vec::into_iter);
        let mut served = Vec::with_capacity(items.len());
        for ((decided, call), step) in items.iter().zip(steps) {
            served.push(match step {
                Step::Here(answered) => answered,
                Step::Fleet(staged) => {
                    let reply = match &mut replies {
                        Ok(replies) => replies.next().ok_or(()),
                        Err(()) => Err(()),
                    };
                    self.finish(outlet, (decided, call), staged, reply, deadline)
                        .await
                }
            });
        }
        served
    }

    /// Prepares a call with its primary path and, when the path accepts it, counts the event
    /// and builds what the publish script takes; a refusal is answered here as by one process.
    fn stage(&self, outlet: &Outlet<'_>, decided: &Decided, call: &Call<'_>) -> Step<'_> {
        let origin = decided.origin();
        let prepared = match implementation(origin.path).prepare(call) {
            Ok(prepared) => prepared,
            Err(_) => return Step::Here(paths::serve(outlet, decided, call)),
        };
        let metrics = &self.parts.metrics;
        if let Some(shadow) = decided.decision.shadow {
            metrics.event(
                Origin {
                    route: origin.route,
                    path: shadow,
                },
                Role::Shadow,
            );
        }
        metrics.event(origin, Role::Primary);
        let request = self.next_id();
        let message = EventMessage {
            from_node: self.config.node_id.clone(),
            request,
            route: origin.route,
            primary: origin.path,
            shadow: decided.decision.shadow,
            flags_version: decided.flags_version,
            user_id: call.user_id.to_owned(),
            event: call.event.clone(),
        }
        .encode();
        Step::Fleet(Staged {
            offline_entry: self.offline_entry(origin, &prepared),
            keepable: prepared.offline_event.is_some(),
            waiting: self.acks.expect(request),
            origin,
            message,
            user_id: prepared.user_id.to_owned(),
            errors: prepared.errors,
        })
    }

    /// A published call's answer: the reached nodes' counts, summed until `deadline`. When
    /// Redis did not run its script, the call is served to this node's connections only.
    async fn finish(
        &self,
        outlet: &Outlet<'_>,
        (decided, call): (&Decided, &Call<'_>),
        staged: Staged<'_>,
        reply: Result<PublishReply, ()>,
        deadline: Instant,
    ) -> Served {
        let Ok(reply) = reply else {
            drop(staged.waiting);
            // Counted already when staged: served here without counting the event twice.
            let served = paths::serve_with(
                outlet,
                staged.origin,
                implementation(staged.origin.path),
                None,
                call,
                decided.accepted_at,
            );
            return degraded(served);
        };
        self.count_offline(staged.origin, &reply, staged.keepable);
        let answered = staged.waiting.until(reply.reached, deadline).await;
        for _ in 0..answered.missing {
            self.parts.metrics.backplane.error(BackplaneOp::AckTimeout);
        }
        Served {
            primary: Ok((staged.user_id, staged.errors)),
            delivery: Delivery {
                connections_attempted: answered.attempted,
                successful_sends: answered.sent,
                queued: reply.queued,
            },
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
    fn serve_here(&self, outlet: &Outlet<'_>, decided: &Decided, call: &Call<'_>) -> Served {
        let served = paths::serve(outlet, decided, call);
        if self.is_up() {
            served
        } else {
            degraded(served)
        }
    }

    /// The publish script's invocation for one staged call.
    fn invocation<'s>(
        &'s self,
        staged: &Staged<'_>,
        dead: &[String],
    ) -> redis::ScriptInvocation<'s> {
        let [nodes_key, offline_key] = self.user_keys(&staged.user_id);
        let mut invocation = self.scripts.publish.key(nodes_key);
        invocation
            .key(offline_key)
            .arg(&staged.message)
            .arg(&staged.offline_entry)
            .arg(self.offline.len)
            .arg(self.offline.ttl.as_millis() as u64)
            .arg(&self.channel_prefix);
        for node in dead {
            invocation.arg(node);
        }
        invocation
    }

    /// Runs the publish script for one call (`EVALSHA`, loading the script first if this
    /// Redis lost it); `Err` (counted) when Redis did not answer.
    async fn publish(&self, staged: &Staged<'_>) -> Result<PublishReply, ()> {
        let dead = presence::dead_nodes(&lock(&self.view));
        let invocation = self.invocation(staged, &dead);
        let mut commands = self.commands.clone();
        let reply = self.answered(invocation.invoke_async(&mut commands).await)?;
        self.parse_reply(reply)
    }

    /// Runs the publish scripts of several calls in one pipeline: one round trip, run by Redis
    /// in this order. The pipeline starts with `SCRIPT LOAD` (~10 µs of Redis CPU per batch,
    /// measured), so a Redis that lost its scripts cannot fail some items and run others.
    async fn publish_many(&self, staged: &[&Staged<'_>]) -> Result<Vec<PublishReply>, ()> {
        let dead = presence::dead_nodes(&lock(&self.view));
        let invocations: Vec<_> = staged
            .iter()
            .map(|staged| self.invocation(staged, &dead))
            .collect();
        let mut pipeline = redis::pipe();
        pipeline.load_script(&self.scripts.publish).ignore();
        for invocation in &invocations {
            pipeline.invoke_script(invocation);
        }
        let mut commands = self.commands.clone();
        let replies: Vec<Vec<String>> = self.answered(pipeline.query_async(&mut commands).await)?;
        if replies.len() != staged.len() {
            self.parts.metrics.backplane.error(BackplaneOp::Publish);
            return Err(());
        }
        // Stops at the first reply that is not one, so a batch counts one error, as a call.
        replies
            .into_iter()
            .map(|reply| self.parse_reply(reply))
            .collect()
    }

    /// What Redis answered a publish with; `Err` (counted) when it did not answer.
    fn answered<T>(&self, reply: redis::RedisResult<T>) -> Result<T, ()> {
        reply.map_err(|error| {
            tracing::warn!(%error, "backplane publish failed; serving this node's connections only");
            self.parts.metrics.backplane.error(BackplaneOp::Publish);
        })
    }

    /// One publish script's reply; `Err` (counted) when Redis answered something else.
    fn parse_reply(&self, reply: Vec<String>) -> Result<PublishReply, ()> {
        PublishReply::parse(reply)
            .ok_or_else(|| self.parts.metrics.backplane.error(BackplaneOp::Publish))
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

/// A call the primary path accepted, ready for the publish script.
struct Staged<'f> {
    origin: Origin,
    message: Vec<u8>,
    /// What the offline stream keeps ('' = nothing).
    offline_entry: String,
    /// The registry key the path delivers to; the user's Redis keys are named by it.
    user_id: String,
    /// Problems the path corrected, for the answer.
    errors: Vec<String>,
    /// Whether the path would keep the event for an offline user.
    keepable: bool,
    /// The call's place among those awaiting acks (under the number its message carries),
    /// given up however the call ends, its future dropped mid-flight included.
    waiting: AckWait<'f>,
}

/// A batch item: staged for the fleet, or already answered here (a refusal).
enum Step<'f> {
    Fleet(Staged<'f>),
    Here(Served),
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
