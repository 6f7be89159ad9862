//! The fleet's flags in Redis: one hash (`{prefix}:flags`: version, text, who) changed only by
//! a compare-and-set script that also publishes on `{prefix}:flags:changed`. Every node follows
//! that channel and, as a safety net for a notice lost while its subscription was down, checks
//! the version every [`CHECK_EVERY`]; either way it takes a newer set within a second.
//!
//! The store's side ([`SharedFlags`]) is blocking, on its own connection: the flag store runs
//! every change on a blocking thread already, and each call is bounded by the timeouts below,
//! so a change while Redis is away fails in about a second with a clear error.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::Fleet;
use crate::backplane::scripts;
use crate::flags::store::{FlagStore, SharedFlags, SharedSet, SharedUnavailable, Swap};
use crate::labels::Trigger;
use crate::mutex::lock;

/// How often a node checks the fleet's flags version even without a notice.
pub(crate) const CHECK_EVERY: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const IO_TIMEOUT: Duration = Duration::from_secs(1);

/// The fleet's flags, as the flag store sees them.
pub(crate) struct RedisFlags {
    connection: Blocking,
    key: String,
    channel: String,
    node_id: String,
    swap: redis::Script,
}

/// A blocking connection for the store's calls, bounded by the timeouts above.
pub(super) struct Blocking {
    client: redis::Client,
    /// Opened on first use, dropped after an error (the next call reconnects).
    connection: Mutex<Option<redis::Connection>>,
}

impl Blocking {
    pub(super) fn new(client: redis::Client) -> Blocking {
        Blocking {
            client,
            connection: Mutex::new(None),
        }
    }

    pub(super) fn call<T>(
        &self,
        run: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, SharedUnavailable> {
        let mut connection = lock(&self.connection);
        if connection.is_none() {
            let opened = self
                .client
                .get_connection_with_timeout(CONNECT_TIMEOUT)
                .and_then(|c| {
                    c.set_read_timeout(Some(IO_TIMEOUT))?;
                    c.set_write_timeout(Some(IO_TIMEOUT))?;
                    Ok(c)
                })
                .map_err(|error| SharedUnavailable(error.to_string()))?;
            *connection = Some(opened);
        }
        let Some(open) = connection.as_mut() else {
            return Err(SharedUnavailable("no connection".to_owned()));
        };
        run(open).map_err(|error| {
            *connection = None;
            SharedUnavailable(error.to_string())
        })
    }
}

impl SharedFlags for RedisFlags {
    fn load(&self) -> Result<Option<SharedSet>, SharedUnavailable> {
        let fields: Vec<Option<String>> = self.connection.call(|c| {
            redis::cmd("HMGET")
                .arg(&self.key)
                .arg(&["version", "text", "trigger", "actor", "at"][..])
                .query(c)
        })?;
        let [Some(version), Some(text), trigger, actor, at] =
            <[Option<String>; 5]>::try_from(fields).unwrap_or_default()
        else {
            return Ok(None);
        };
        let version = version.parse().map_err(|_| {
            SharedUnavailable(format!(
                "the fleet's flags version {version:?} is not a number"
            ))
        })?;
        let trigger = trigger
            .and_then(|name| Trigger::ALL.into_iter().find(|t| t.as_str() == name))
            .unwrap_or(Trigger::Api);
        Ok(Some(SharedSet {
            version,
            text,
            trigger,
            actor: actor.unwrap_or_default(),
            // Absent (or unreadable) on a set an older node wrote: unknown.
            at: at.and_then(|at| at.parse().ok()),
        }))
    }

    fn swap(&self, expected: Option<u64>, new: &SharedSet) -> Result<Swap, SharedUnavailable> {
        let reply: (String, u64) = self.connection.call(|c| {
            self.swap
                .key(&self.key)
                .arg(expected.map(|v| v.to_string()).unwrap_or_default())
                .arg(new.version)
                .arg(&new.text)
                .arg(new.trigger.as_str())
                .arg(&new.actor)
                .arg(&self.node_id)
                .arg(&self.channel)
                .arg(new.at.map(|at| at.to_string()).unwrap_or_default())
                .invoke(c)
        })?;
        Ok(match reply.0.as_str() {
            "done" => Swap::Done,
            _ => Swap::Stale { current: reply.1 },
        })
    }
}

impl Fleet {
    /// The fleet's flags for this node's flag store.
    pub(crate) fn shared_flags(&self) -> Arc<dyn SharedFlags> {
        Arc::new(RedisFlags {
            connection: Blocking::new(self.client.clone()),
            key: format!("{}:flags", self.config.key_prefix),
            channel: self.flags_channel(),
            node_id: self.config.node_id.clone(),
            swap: redis::Script::new(scripts::SWAP_FLAGS),
        })
    }

    fn flags_channel(&self) -> String {
        format!("{}:flags:changed", self.config.key_prefix)
    }

    /// Keeps `flags` on the fleet's set until `shutdown`: a check on every change notice and
    /// every [`CHECK_EVERY`] (the notice's subscription is re-made, with backoff, when lost).
    pub(crate) async fn follow_flags(
        self: Arc<Self>,
        flags: Arc<FlagStore>,
        shutdown: CancellationToken,
    ) {
        let channel = self.flags_channel();
        let mut backoff = Duration::from_millis(100);
        loop {
            let subscribed = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                redis::RedisResult::Ok(pubsub)
            };
            let mut notices = match tokio::time::timeout(CONNECT_TIMEOUT * 2, subscribed).await {
                Ok(Ok(pubsub)) => {
                    backoff = Duration::from_millis(100);
                    Some(pubsub.into_on_message())
                }
                _ => None,
            };
            let mut check = tokio::time::interval(CHECK_EVERY);
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let lost_at = tokio::time::Instant::now() + backoff;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = check.tick() => {}
                    notice = async { notices.as_mut()?.next().await }, if notices.is_some() => {
                        if notice.is_none() {
                            break;
                        }
                    }
                }
                sync(&flags).await;
                if notices.is_none() && tokio::time::Instant::now() >= lost_at {
                    break;
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

/// One check of the fleet's flags, off the async workers (it may write the mirror file).
async fn sync(flags: &Arc<FlagStore>) {
    let flags = Arc::clone(flags);
    if let Ok(Err(error)) = tokio::task::spawn_blocking(move || flags.sync_with_fleet()).await {
        tracing::debug!(%error, "cannot check the fleet's flags");
    }
}
