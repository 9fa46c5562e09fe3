"""The presence store's Lua scripts: each writes one topic's entries and, in the same
atomic step, the topic's score in the registry (see presence.py)."""

# KEYS: hash, zset, registry. ARGV[1]: topic, ARGV[2]: grace (ms) past the latest expiry.
SETTLE = """
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

# ARGV: topic, grace, ref, value, expiry.
ADD = (
    SETTLE
    + """
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[3])
settle()
return 1
"""
)

# ARGV: topic, grace, refs... Returns the entries removed: ref, value, ref, value...
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

# ARGV: topic, grace, expiry, then ref/value pairs. Returns the refs written back.
REFRESH = (
    SETTLE
    + """
local back = {}
for i = 4, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    table.insert(back, ARGV[i])
  end
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[i])
end
settle()
return back
"""
)

# ARGV: topic, grace, now. Removes and returns every expired entry of the topic (ref,
# value, ref, value...).
SWEEP = (
    SETTLE
    + """
local refs = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
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
