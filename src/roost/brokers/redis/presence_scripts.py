"""The presence store's Lua scripts: each writes one topic's entries and, in the same
atomic step, the topic's score in the registry (see presence.py).

Every expiry is written and compared on Redis's clock (``TIME``, read inside the
script), never a node's: nodes whose clocks disagree still agree on when an entry is
dead. (Redis 7 replicates a script's effects, so a script may read ``TIME`` before it
writes; on Redis 5 and 6 ``redis.replicate_commands()`` asks for that.)
"""

# KEYS: hash, zset, registry. ARGV[1]: topic, ARGV[2]: ttl (ms): an entry written now
# lives that long, and both keys expire that long past their latest entry's expiry.
SETTLE = """
if redis.replicate_commands then redis.replicate_commands() end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function settle()
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if first[1] == nil then
    redis.call('ZREM', KEYS[3], ARGV[1])
    redis.call('DEL', KEYS[1], KEYS[2])
    return
  end
  redis.call('ZADD', KEYS[3], first[2], ARGV[1])
  local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  local at = tonumber(last[2]) + tonumber(ARGV[2])
  redis.call('PEXPIREAT', KEYS[1], at)
  redis.call('PEXPIREAT', KEYS[2], at)
end
"""

# ARGV: topic, ttl, ref, value.
ADD = (
    SETTLE
    + """
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[2]), ARGV[3])
settle()
return 1
"""
)

# ARGV: topic, ttl, refs... Returns the entries removed: ref, value, ref, value...
REMOVE = (
    SETTLE
    + """
local out = {}
for i = 3, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v then
    redis.call('HDEL', KEYS[1], ARGV[i])
    table.insert(out, ARGV[i])
    table.insert(out, v)
  end
  redis.call('ZREM', KEYS[2], ARGV[i])
end
settle()
return out
"""
)

# ARGV: topic, ttl, then ref/value pairs. Returns the refs written back.
REFRESH = (
    SETTLE
    + """
local expiry = now_ms() + tonumber(ARGV[2])
local back = {}
for i = 3, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    table.insert(back, ARGV[i])
  end
  redis.call('ZADD', KEYS[2], expiry, ARGV[i])
end
settle()
return back
"""
)

# ARGV: topic, ttl. Removes and returns every expired entry of the topic (ref, value,
# ref, value...).
SWEEP = (
    SETTLE
    + """
local refs = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms())
local out = {}
for _, ref in ipairs(refs) do
  local v = redis.call('HGET', KEYS[1], ref)
  redis.call('HDEL', KEYS[1], ref)
  redis.call('ZREM', KEYS[2], ref)
  if v then
    table.insert(out, ref)
    table.insert(out, v)
  end
end
settle()
return out
"""
)

# KEYS: hash, zset. The live entries of a topic (ref, value, ref, value...): those whose
# expiry has not passed by Redis's clock. Reads only.
LIST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = {}
for _, ref in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], now, '+inf')) do
  live[ref] = true
end
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  if live[all[i]] then
    table.insert(out, all[i])
    table.insert(out, all[i + 1])
  end
end
return out
"""

# KEYS: zset. How many entries of a topic are live by Redis's clock. Reads only.
COUNT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], now, '+inf')
"""
