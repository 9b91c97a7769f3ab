//! The Lua scripts that make each store operation one atomic step in Redis
//! (a script runs alone: two webhooks on two nodes cannot both stamp).
//!
//! Values come in as ARGV and are only compared or stored, never evaluated. The
//! session and phone-index keys a script derives (stamp, end) are the prefix the
//! node passes plus an id or phone from the record itself: one Redis, not a cluster.

/// KEYS[1] session, KEYS[2] phone index; ARGV: ttl ms, score, id, "1" to index,
/// then field/value pairs. 0 when the id exists.
pub const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
end
return 1
"#;

/// KEYS[1] session; ARGV[1] time. The first answer time stays.
pub const MARK_ANSWERED: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HSETNX', KEYS[1], 'answered', ARGV[1])
"#;

/// KEYS[1] session; ARGV: time, linger ms, id, phone-index prefix. The first end
/// time stays; the session leaves its phone index and expires after the linger.
pub const MARK_ENDED: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HSETNX', KEYS[1], 'ended', ARGV[1]) == 0 then return 0 end
local phone = redis.call('HGET', KEYS[1], 'phone')
if phone then redis.call('ZREM', ARGV[4] .. phone, ARGV[3]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#;

/// KEYS[1] phone index; ARGV: org, phone, ticket, session-key prefix.
/// The rules of the in-memory table: a live session of the org already carrying
/// this ticket wins (idempotent), else the newest unstamped one is stamped, else
/// the first stamped one is a conflict. Ids whose record expired leave the index.
pub const STAMP: &str = r#"
local ids = redis.call('ZREVRANGE', KEYS[1], 0, -1)
local live = {}
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', ARGV[4] .. id, 'org', 'phone', 'ended', 'ticket')
  if not f[1] then
    redis.call('ZREM', KEYS[1], id)
  elseif f[1] == ARGV[1] and f[2] == ARGV[2] and not f[3] then
    table.insert(live, {id, f[4]})
  end
end
for _, s in ipairs(live) do
  if s[2] == ARGV[3] then return {'already', s[1]} end
end
for _, s in ipairs(live) do
  if not s[2] then
    redis.call('HSET', ARGV[4] .. s[1], 'ticket', ARGV[3])
    return {'stamped', s[1]}
  end
end
for _, s in ipairs(live) do return {'conflict', s[1], s[2]} end
return {'none'}
"#;

/// KEYS[1] session; ARGV: contact id, then the contact's field/value pairs. The
/// contact id already there stays; the details are set over the old ones.
pub const ATTACH_CONTACT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSETNX', KEYS[1], 'contact_id', ARGV[1])
if #ARGV > 1 then redis.call('HSET', KEYS[1], unpack(ARGV, 2)) end
return redis.call('HGET', KEYS[1], 'contact_id')
"#;

/// KEYS[1] session; ARGV: most custom entries, contact mode (keep, set, clear),
/// contact id, summary mode (keep, set, clear), summary, then `c:<key>`/value
/// pairs. Returns {'nf'}, {'toomany'}, or
/// {'patched', HGETALL}.
pub const PATCH: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {'nf'} end
local n = 0
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, 2) == 'c:' then n = n + 1 end
end
for i = 6, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 0 then n = n + 1 end
end
if n > tonumber(ARGV[1]) then return {'toomany'} end
if #ARGV >= 6 then redis.call('HSET', KEYS[1], unpack(ARGV, 6)) end
if ARGV[2] == 'set' then
  redis.call('HSET', KEYS[1], 'contact_id', ARGV[3])
elseif ARGV[2] == 'clear' then
  redis.call('HDEL', KEYS[1], 'contact_id')
end
if ARGV[4] == 'set' then
  redis.call('HSET', KEYS[1], 'summary', ARGV[5])
elseif ARGV[4] == 'clear' then
  redis.call('HDEL', KEYS[1], 'summary')
end
return {'patched', redis.call('HGETALL', KEYS[1])}
"#;

/// KEYS[1] session; ARGV: ttl ms, phone-index prefix. Keeps a live session (and
/// its phone index) from expiring; an ended one keeps its linger.
pub const REFRESH: &str = r#"
local f = redis.call('HMGET', KEYS[1], 'ended', 'phone')
if f[1] then return 0 end
if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 0 then return 0 end
if f[2] then redis.call('PEXPIRE', ARGV[2] .. f[2], ARGV[1]) end
return 1
"#;
