//! The Lua scripts of the cluster's liveness and claims. Each runs alone in
//! Redis, so a claim and a node's own return cannot interleave: every live call
//! of a dead node is either ended by the one node that claimed it or by the node
//! itself when it comes back, never both.
//!
//! Keys, under the session store's `key_prefix` (ARGV[1]):
//! - `nodes`: sorted set, node id scored by its last heartbeat (Redis time, ms);
//! - `live:<node>`: hash, session id to the live call's row (`wire`);
//! - `claiming:<node>`: hash, calls this node claimed and has not yet ended;
//! - `claimed:<node>`: set, calls of this node another node ended (kept 7 days,
//!   read when the node comes back).
//!
//! The scripts build key names from the prefix, as the session scripts do: one
//! Redis (or a primary with replicas), not a Redis Cluster.

/// ARGV: prefix, node, then every node name the node's local live calls carry.
/// The node is back: the calls other nodes ended for it are returned, its old
/// live set is dropped (it ends the rest itself), and it is alive from now.
pub const JOIN: &str = r#"
local p, node = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 2, #ARGV do
  local n = ARGV[i]
  local ids = redis.call('SMEMBERS', p .. 'claimed:' .. n)
  for _, id in ipairs(ids) do out[#out + 1] = id end
  redis.call('DEL', p .. 'live:' .. n)
end
redis.call('ZADD', p .. 'nodes', now, node)
return out
"#;

/// ARGV: prefix, node, number of rows to put, then (session id, row) pairs,
/// then session ids to remove. The heartbeat, with the live set's changes.
/// 0 (and nothing written) when the node is no longer listed as alive: another
/// node took it for dead and ended its calls; it must join again.
pub const BEAT: &str = r#"
local p, node = ARGV[1], ARGV[2]
local nodes = p .. 'nodes'
if not redis.call('ZSCORE', nodes, node) then return 0 end
local live = p .. 'live:' .. node
local puts = tonumber(ARGV[3])
local i = 4
for _ = 1, puts do
  redis.call('HSET', live, ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  redis.call('HDEL', live, ARGV[i])
  i = i + 1
end
local t = redis.call('TIME')
redis.call('ZADD', nodes, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), node)
return 1
"#;

/// ARGV: prefix, claimer, node timeout (ms). Every other node silent longer than
/// the timeout is dead: its live calls, and the calls it had claimed and not yet
/// ended, move to the claimer's `claiming` hash, each marked in its origin
/// node's `claimed` set; the dead node leaves `nodes`. Returns the calls moved.
pub const CLAIM: &str = r#"
local p, me = ARGV[1], ARGV[2]
local nodes = p .. 'nodes'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', nodes, '-inf', now - tonumber(ARGV[3]))
local mine = p .. 'claiming:' .. me
local moved = 0
for _, n in ipairs(dead) do
  if n ~= me then
    for _, src in ipairs({p .. 'live:' .. n, p .. 'claiming:' .. n}) do
      local kv = redis.call('HGETALL', src)
      for i = 1, #kv, 2 do
        redis.call('HSET', mine, kv[i], kv[i + 1])
        local ok, row = pcall(cjson.decode, kv[i + 1])
        local origin = n
        if ok and type(row) == 'table' and type(row.node_id) == 'string' then
          origin = row.node_id
        end
        local mark = p .. 'claimed:' .. origin
        redis.call('SADD', mark, kv[i])
        redis.call('EXPIRE', mark, 604800)
        moved = moved + 1
      end
      redis.call('DEL', src)
    end
    redis.call('ZREM', nodes, n)
  end
end
return moved
"#;
