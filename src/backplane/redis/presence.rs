//! This node's place in the fleet: a heartbeat into a sorted set scored by Redis' own clock,
//! and the fleet as last read from it. A node that stops renewing (killed, cut off) is no
//! longer counted after `node_ttl_ms`; its users' presence entries are dropped by the next
//! publish for them, and forgotten altogether after [`FORGET_AFTER`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Fleet;
use crate::labels::BackplaneOp;
use crate::mutex::lock;

/// How long a silent node is remembered (and passed to publishes as dead) before it is
/// forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// One node of the fleet as this node last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FleetNode {
    pub(crate) node_id: String,
    /// Milliseconds since its last heartbeat, by Redis' clock.
    pub(crate) last_seen_ms: u64,
    /// Renewed within `node_ttl_ms`: counted as part of the fleet.
    pub(crate) live: bool,
    pub(crate) connections: u64,
    pub(crate) users: u64,
}

/// The fleet as `/admin/stats` and `/readyz` show it.
#[derive(Debug, Clone)]
pub(crate) struct FleetStatus {
    pub(crate) node_id: String,
    /// This node reaches Redis and is subscribed.
    pub(crate) up: bool,
    pub(crate) nodes: Vec<FleetNode>,
}

#[derive(Debug, Default)]
pub(crate) struct FleetView {
    nodes: Vec<FleetNode>,
}

/// The nodes the last heartbeat found silent for longer than `node_ttl_ms`.
pub(super) fn dead_nodes(view: &FleetView) -> Vec<String> {
    view.nodes
        .iter()
        .filter(|node| !node.live)
        .map(|node| node.node_id.clone())
        .collect()
}

impl Fleet {
    /// This node and the fleet as last seen.
    pub(crate) fn status(&self) -> FleetStatus {
        FleetStatus {
            node_id: self.config.node_id.clone(),
            up: self.is_up(),
            nodes: lock(&self.view).nodes.clone(),
        }
    }

    /// Renews this node every `heartbeat_ms` until shutdown. A node that finds it was taken
    /// for dead (its previous heartbeat too old or forgotten) writes its users' presence again.
    pub(crate) async fn heartbeat_every(self: Arc<Self>, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(self.config.heartbeat);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let beat = self.heartbeat().await;
            match beat {
                // A new node has no previous heartbeat and nothing to write yet.
                Ok(true) if first => first = false,
                Ok(true) if self.is_up() => {
                    tracing::warn!(
                        "this node was taken for dead by the fleet; writing its presence again"
                    );
                    self.resync_presence(true).await;
                }
                // Joins and leaves whose command failed are corrected once Redis answers.
                Ok(_) => {
                    first = false;
                    if self.is_up() && !lock(&self.presence_dirty).is_empty() {
                        self.resync_presence(false).await;
                    }
                }
                Err(error) => {
                    self.parts.metrics.backplane.error(BackplaneOp::Heartbeat);
                    tracing::debug!(%error, "backplane heartbeat failed");
                }
            }
        }
    }

    /// One heartbeat: returns whether this node had been taken for dead.
    async fn heartbeat(&self) -> redis::RedisResult<bool> {
        let prefix = &self.config.key_prefix;
        let stats = format!(
            "{} {}",
            self.parts.registry.n_connections(),
            self.parts.metrics.connected_users.get()
        );
        let mut commands = self.commands.clone();
        let reply: Vec<String> = self
            .scripts
            .heartbeat
            .key(format!("{prefix}:nodes"))
            .key(format!("{prefix}:node_stats"))
            .arg(&self.config.node_id)
            .arg(stats)
            .arg(FORGET_AFTER.as_millis() as u64)
            .invoke_async(&mut commands)
            .await?;
        let ttl = self.config.node_ttl.as_millis() as u64;
        let mut fields = reply.into_iter();
        let now: u64 = fields.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let previous: Option<u64> = fields.next().and_then(|p| p.parse().ok());
        let mut nodes = Vec::new();
        let rest: Vec<String> = fields.collect();
        for chunk in rest.chunks_exact(3) {
            let seen: u64 = chunk[1].parse::<f64>().map_or(0, |s| s as u64);
            let mut counts = chunk[2].split(' ').map(|n| n.parse().unwrap_or(0));
            let last_seen_ms = now.saturating_sub(seen);
            nodes.push(FleetNode {
                node_id: chunk[0].clone(),
                last_seen_ms,
                live: last_seen_ms <= ttl,
                connections: counts.next().unwrap_or(0),
                users: counts.next().unwrap_or(0),
            });
        }
        let live = nodes.iter().filter(|node| node.live).count();
        self.parts.metrics.backplane.nodes.set(live as i64);
        lock(&self.view).nodes = nodes;
        Ok(previous.is_none_or(|previous| now.saturating_sub(previous) > ttl))
    }

    /// Leaves the fleet at once on a clean stop, rather than expiring.
    pub(crate) async fn depart(&self) {
        let prefix = &self.config.key_prefix;
        let mut commands = self.commands.clone();
        let departed: redis::RedisResult<i64> = self
            .scripts
            .depart
            .key(format!("{prefix}:nodes"))
            .key(format!("{prefix}:node_stats"))
            .arg(&self.config.node_id)
            .invoke_async(&mut commands)
            .await;
        if let Err(error) = departed {
            self.parts.metrics.backplane.error(BackplaneOp::Heartbeat);
            tracing::debug!(%error, "leaving the fleet failed; the node expires instead");
        }
        self.subscribed.store(false, Ordering::Release);
        self.parts.metrics.backplane.up.set(0);
    }
}
