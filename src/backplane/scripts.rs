//! The Lua scripts the Redis backplane runs. Each one is a single step in Redis' one order of
//! commands: what it reads and what it writes (presence, the offline stream, the publishes)
//! cannot interleave with another node's step for the same user. That is where the fleet's
//! per-user order and the offline queue's exactly-once replay come from.
//!
//! Every key a script touches is one user's (`KEYS`, sharing the user's hash tag) or one
//! node's channel, so on Redis Cluster a script runs on the user's shard (ARCHITECTURE.md,
//! Fleet).

/// Publishes an event to every node holding the user; when none receives it and it may be
/// kept, appends it to the user's offline stream instead (capped, with a TTL).
///
/// KEYS: presence hash (node → connections), offline stream.
/// ARGV: message, offline entry ('' = not kept), max length, TTL ms, channel prefix, then the
/// nodes the caller knows to be dead (dropped from presence first).
/// Returns: queued (0/1), offline events dropped (expired or evicted), then the nodes reached.
pub(super) const PUBLISH: &str = r"
for i = 6, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
local reached = {}
for _, node in ipairs(redis.call('HKEYS', KEYS[1])) do
  if redis.call('PUBLISH', ARGV[5] .. node, ARGV[1]) > 0 then
    reached[#reached + 1] = node
  end
end
local queued, dropped = 0, 0
if #reached == 0 and ARGV[2] ~= '' then
  local maxlen, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  dropped = redis.call('XTRIM', KEYS[2], 'MINID', now - ttl)
  local len = redis.call('XLEN', KEYS[2])
  if len >= maxlen then dropped = dropped + len - maxlen + 1 end
  redis.call('XADD', KEYS[2], 'MAXLEN', maxlen, '*', 'e', ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ttl)
  queued = 1
end
local reply = {tostring(queued), tostring(dropped)}
for _, node in ipairs(reached) do reply[#reply + 1] = node end
return reply
";

/// A connection of this node joins its user: publishes, on this node's own channel, the join
/// header followed by the user's unexpired offline events, then (only if this node's
/// subscriber received it) deletes the offline stream and counts the connection in presence.
/// Everything published for the user after this step reaches this node after the join.
///
/// KEYS: presence hash, offline stream. ARGV: this node's channel, node id, join header, TTL ms.
/// Returns the number of replayed events, or -1 when this node is not subscribed (nothing
/// changed).
pub(super) const JOIN: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local entries = redis.call('XRANGE', KEYS[2], now - tonumber(ARGV[4]), '+')
local lines = {ARGV[3]}
for _, entry in ipairs(entries) do lines[#lines + 1] = entry[2][2] end
if redis.call('PUBLISH', ARGV[1], table.concat(lines, '\n')) == 0 then return -1 end
redis.call('DEL', KEYS[2])
redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
return #entries
";

/// A connection of this node left: one fewer in presence, the field gone at zero.
///
/// KEYS: presence hash. ARGV: node id.
pub(super) const LEAVE: &str = r"
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
";

/// Renews this node in the fleet and reads the fleet: nodes by last heartbeat (Redis' clock,
/// so hosts' clocks do not matter) and what each reported; forgets nodes silent for long.
///
/// KEYS: nodes sorted set, node stats hash. ARGV: node id, stats, forget after ms.
/// Returns: now (ms), this node's previous heartbeat ('' if none: it was forgotten or is new),
/// then node, last heartbeat, stats for every node still remembered.
pub(super) const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local previous = redis.call('ZSCORE', KEYS[1], ARGV[1]) or ''
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local cutoff = now - tonumber(ARGV[3])
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff)) do
  redis.call('HDEL', KEYS[2], node)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
local reply = {tostring(now), previous}
local nodes = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #nodes, 2 do
  reply[#reply + 1] = nodes[i]
  reply[#reply + 1] = nodes[i + 1]
  reply[#reply + 1] = redis.call('HGET', KEYS[2], nodes[i]) or ''
end
return reply
";

/// A node stopping cleanly leaves the fleet at once instead of expiring.
///
/// KEYS: nodes sorted set, node stats hash. ARGV: node id.
pub(super) const DEPART: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 0
";

/// Replaces the fleet's flags if they are still at the version the caller read, and tells every
/// node (a compare-and-set: two nodes changing at once cannot both win).
///
/// KEYS: the flags hash (version, text, trigger, actor, node, at).
/// ARGV: expected version ('' = not seeded yet), new version, text, trigger, actor, node,
/// the change channel, unix seconds of the change.
/// Returns: 'done' or 'stale', then the version the flags are at.
pub(super) const SWAP_FLAGS: &str = r"
local current = redis.call('HGET', KEYS[1], 'version')
if (current or '') ~= ARGV[1] then return {'stale', current or '0'} end
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'text', ARGV[3], 'trigger', ARGV[4],
  'actor', ARGV[5], 'node', ARGV[6], 'at', ARGV[8])
redis.call('PUBLISH', ARGV[7], ARGV[2])
return {'done', ARGV[2]}
";
