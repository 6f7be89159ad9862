//! The `[backplane]` section: whether this gateway is one process (`memory`) or a node of a
//! fleet sharing one Redis (`redis`), and how the node names and times itself in the fleet.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// Where delivery, offline queues and presence live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackplaneKind {
    /// One process: the registry in memory is everything (the default, and `serve --dev`).
    Memory,
    /// A node of a fleet: events, offline queues and presence go through Redis.
    Redis,
}

/// The validated `[backplane]` section.
#[derive(Debug, Clone)]
pub struct BackplaneConfig {
    pub kind: BackplaneKind,
    pub redis_url: String,
    /// Prefix of every key and channel, so two fleets can share one Redis.
    pub key_prefix: String,
    /// This node's name in the fleet: generated (host, pid, random) unless configured.
    pub node_id: String,
    /// How long a producer call waits for the delivery counts of the other nodes.
    pub ack_timeout: Duration,
    /// How often this node renews its place in the fleet.
    pub heartbeat: Duration,
    /// How long a node that stopped renewing is still counted.
    pub node_ttl: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackplane {
    kind: String,
    redis_url: String,
    key_prefix: String,
    node_id: String,
    ack_timeout_ms: u64,
    heartbeat_ms: u64,
    node_ttl_ms: u64,
}

impl BackplaneConfig {
    pub(super) fn from_raw(raw: RawBackplane) -> Result<BackplaneConfig, ConfigError> {
        let kind = match raw.kind.as_str() {
            "memory" => BackplaneKind::Memory,
            "redis" => BackplaneKind::Redis,
            other => {
                return Err(invalid(
                    "backplane.kind",
                    format!("{other:?} is not \"memory\" or \"redis\""),
                ));
            }
        };
        // Braces would change which part of a key Redis Cluster hashes (ARCHITECTURE.md, Fleet).
        let printable = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_graphic() && c != '{' && c != '}')
        };
        if !printable(&raw.key_prefix) {
            return Err(invalid(
                "backplane.key_prefix",
                "must be non-empty printable ASCII without spaces or braces".to_owned(),
            ));
        }
        let node_id = if raw.node_id.is_empty() {
            generated_node_id()
        } else if printable(&raw.node_id) {
            raw.node_id
        } else {
            return Err(invalid(
                "backplane.node_id",
                "must be printable ASCII without spaces or braces".to_owned(),
            ));
        };
        if kind == BackplaneKind::Redis
            && let Err(error) = redis::Client::open(raw.redis_url.as_str())
        {
            return Err(invalid(
                "backplane.redis_url",
                format!("{:?} is not a Redis URL: {error}", raw.redis_url),
            ));
        }
        let ms = |key, value: u64| {
            if value == 0 {
                Err(invalid(key, "must be greater than 0".to_owned()))
            } else {
                Ok(Duration::from_millis(value))
            }
        };
        let heartbeat = ms("backplane.heartbeat_ms", raw.heartbeat_ms)?;
        let node_ttl = ms("backplane.node_ttl_ms", raw.node_ttl_ms)?;
        if node_ttl <= heartbeat {
            return Err(invalid(
                "backplane.node_ttl_ms",
                "must be longer than backplane.heartbeat_ms, or live nodes look dead".to_owned(),
            ));
        }
        Ok(BackplaneConfig {
            kind,
            redis_url: raw.redis_url,
            key_prefix: raw.key_prefix,
            node_id,
            ack_timeout: ms("backplane.ack_timeout_ms", raw.ack_timeout_ms)?,
            heartbeat,
            node_ttl,
        })
    }
}

fn invalid(key: &'static str, message: String) -> ConfigError {
    ConfigError::Invalid { key, message }
}

/// `host-pid-random`: unique across restarts (a restarted node is a new node whose old
/// presence simply expires) and readable in logs.
fn generated_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    let random = super::random_token("");
    format!("{host}-{}-{}", std::process::id(), &random[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kind: &str, node_id: &str, heartbeat_ms: u64, node_ttl_ms: u64) -> RawBackplane {
        RawBackplane {
            kind: kind.to_owned(),
            redis_url: "redis://127.0.0.1:6379/0".to_owned(),
            key_prefix: "switchyard".to_owned(),
            node_id: node_id.to_owned(),
            ack_timeout_ms: 500,
            heartbeat_ms,
            node_ttl_ms,
        }
    }

    #[test]
    fn kinds_node_ids_and_timings_are_checked() {
        let memory = BackplaneConfig::from_raw(raw("memory", "", 1000, 3000)).unwrap();
        assert_eq!(memory.kind, BackplaneKind::Memory);
        assert!(memory.node_id.contains(&std::process::id().to_string()));
        let named = BackplaneConfig::from_raw(raw("redis", "node-a", 1000, 3000)).unwrap();
        assert_eq!(
            (named.kind, named.node_id.as_str()),
            (BackplaneKind::Redis, "node-a")
        );
        let mut not_redis = raw("redis", "", 1000, 3000);
        not_redis.redis_url = "http://127.0.0.1:6379".to_owned();
        let mut braces = raw("redis", "", 1000, 3000);
        braces.key_prefix = "fleet{1}".to_owned();
        for (bad, key) in [
            (not_redis, "backplane.redis_url"),
            (braces, "backplane.key_prefix"),
            (raw("etcd", "", 1000, 3000), "backplane.kind"),
            (raw("redis", "a b", 1000, 3000), "backplane.node_id"),
            (raw("redis", "{a}", 1000, 3000), "backplane.node_id"),
            (raw("redis", "", 1000, 1000), "backplane.node_ttl_ms"),
            (raw("redis", "", 0, 1000), "backplane.heartbeat_ms"),
        ] {
            let error = BackplaneConfig::from_raw(bad).unwrap_err();
            assert!(error.to_string().contains(key), "{error}");
        }
    }
}
