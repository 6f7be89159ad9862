//! The seam between delivery and where a user's connections live: one process
//! ([`Backplane::Memory`], the registry alone, exactly the code path of a gateway without a
//! fleet) or a node of a fleet sharing one Redis ([`Backplane::Redis`], `backplane::redis`).
//!
//! Three things go through it: serving a decided producer call, registering a connection and
//! removing one. The memory arm of each is the call it replaces, so a single process pays one
//! branch per event and nothing else: no allocation, no lock, no task.
//!
//! Flags (with rollback and guard latches) and the audit trail are shared through hooks the
//! flag store and the audit log take (`Fleet::shared_flags`, `Fleet::shared_audit`), not
//! through this surface.

pub(crate) mod message;
pub(crate) mod redis;
mod scripts;

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;

use crate::config::{BackplaneKind, Config};
use crate::paths::{self, Call, Decided, Outlet, Served};
use crate::registry::{Connection, RegisterError, Registry};

pub(crate) use self::redis::{Fleet, FleetError, FleetParts, OfflineLimits};

/// Where events, offline queues and presence live.
pub(crate) enum Backplane {
    /// One process: the registry is everything.
    Memory,
    /// A node of a fleet.
    Redis(Arc<Fleet>),
}

impl Backplane {
    /// The backplane `config` names: memory, or this node's side of a Redis fleet.
    pub(crate) fn for_config(config: &Config, parts: FleetParts) -> Result<Backplane, FleetError> {
        match config.backplane.kind {
            BackplaneKind::Memory => Ok(Backplane::Memory),
            BackplaneKind::Redis => {
                let offline = OfflineLimits {
                    len: config.limits.offline_queue_len,
                    ttl: config.limits.offline_ttl,
                };
                let fleet = Fleet::new(&config.backplane, offline, parts)?;
                tracing::info!(node_id = fleet.node_id(), "backplane: redis fleet node");
                Ok(Backplane::Redis(fleet))
            }
        }
    }

    /// The fleet this node belongs to, if any.
    pub(crate) fn fleet(&self) -> Option<&Arc<Fleet>> {
        match self {
            Backplane::Memory => None,
            Backplane::Redis(fleet) => Some(fleet),
        }
    }

    /// Serves a decided call: on this process's registry, or for the whole fleet.
    pub(crate) async fn serve(
        &self,
        outlet: &Outlet<'_>,
        decided: &Decided,
        call: &Call<'_>,
    ) -> Served {
        match self {
            Backplane::Memory => paths::serve(outlet, decided, call),
            // Boxed so the fleet's larger future does not enlarge every producer request's
            // future on the memory backplane.
            Backplane::Redis(fleet) => Box::pin(fleet.serve(outlet, decided, call)).await,
        }
    }

    /// Serves a producer batch's decided calls, in order, one answer each: on this process's
    /// registry one after the other, or for the whole fleet in one round trip to Redis with
    /// the acks of every item awaited together (`Fleet::serve_batch`).
    pub(crate) async fn serve_batch(
        &self,
        outlet: &Outlet<'_>,
        items: &[(Decided, Call<'_>)],
    ) -> Vec<Served> {
        match self {
            Backplane::Memory => items
                .iter()
                .map(|(decided, call)| paths::serve(outlet, decided, call))
                .collect(),
            Backplane::Redis(fleet) => Box::pin(fleet.serve_batch(outlet, items)).await,
        }
    }

    /// Registers a connection (with its offline replay, from wherever the queue is).
    pub(crate) async fn register(
        &self,
        registry: &Registry,
        user_id: &str,
        greeting: impl FnOnce(&Connection) -> Utf8Bytes + Send + 'static,
    ) -> Result<Arc<Connection>, RegisterError> {
        match self {
            Backplane::Memory => registry.register(user_id, greeting),
            Backplane::Redis(fleet) => Box::pin(fleet.register(user_id, Box::new(greeting))).await,
        }
    }

    /// Removes a connection (and, in a fleet, its place in the user's presence).
    pub(crate) fn unregister(&self, registry: &Registry, connection: &Arc<Connection>) {
        match self {
            Backplane::Memory => registry.unregister(connection),
            Backplane::Redis(fleet) => fleet.unregister(connection),
        }
    }
}
